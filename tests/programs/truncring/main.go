// Truncates its own cgoheap ring, as a wild write or a hostile program could
// do to a forwarder that maps the ring shared: the forwarder must survive,
// keep what it had read, and say that this process's events stopped there.
package main

// #include <stdlib.h>
import "C"

import (
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func main() {
	_ = C.malloc(4096) // LEAK: 4096 bytes, read before the truncation
	time.Sleep(300 * time.Millisecond)
	rings, _ := filepath.Glob(filepath.Join(os.Getenv("CGOHEAP_RING_DIR"), strconv.Itoa(os.Getpid())+"-*.ring"))
	if len(rings) != 1 {
		println("truncring: no ring of this process in $CGOHEAP_RING_DIR")
		os.Exit(3)
	}
	if err := os.Truncate(rings[0], 4096); err != nil {
		println("truncring:", err.Error())
		os.Exit(3)
	}
	// The agent's next write to the ring would fault in this process: make
	// none (sleeping and os.Exit call no C allocator), but let the forwarder
	// poll the truncated ring while the process still runs.
	time.Sleep(300 * time.Millisecond)
	os.Exit(0)
}
