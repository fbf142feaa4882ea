module example.com/ownmalloc

go 1.19
