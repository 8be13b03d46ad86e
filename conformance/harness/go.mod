module atrest.dev/conformance/harness

go 1.22

require golang.org/x/net v0.0.0-20190311183353-d8887717615a

require golang.org/x/text v0.3.0 // indirect
