module airtrust.test/tlsclient

go 1.22
