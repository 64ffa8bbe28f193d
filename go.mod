module github.com/esbridge/esbridge

go 1.26
