module example.com/gslice

go 1.19
