// Source of fuzz/corpus/elf/gopclntab-go1.22 (make_seeds.sh): a small Go
// program with an inlined call, whose bare .gopclntab is a seed.
package main

//go:noinline
func leaf(x int) int { return x * 3 }

func inl(x int) int { return leaf(x) + 1 }

func main() { println(inl(4)) }
