module goldencheck

go 1.24.0

require golang.org/x/crypto v0.46.0

require golang.org/x/sys v0.39.0 // indirect
