module atrest/crosscheck

go 1.18

require golang.org/x/crypto v0.21.0

require golang.org/x/sys v0.18.0 // indirect
