module example.com/cppnames

go 1.19
