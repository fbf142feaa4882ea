package gotest

import "testing"

func TestLeaks(t *testing.T) {
	Leak(77) // TEST-LEAKS
}

func TestBalanced(t *testing.T) {
	Balanced(5)
}
