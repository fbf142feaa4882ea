// A small web service over SQLite (mattn/go-sqlite3, through database/sql),
// and the load generator that measures it: the realistic service of
// bench/run.sh. Every request is a cgo call into SQLite (prepare, bind,
// step, finalize: C allocations each time), one in ten also writes.
//
//	sqlserver serve [DIR]          listens on 127.0.0.1 (a free port) and
//	                               prints "listening ADDR"; GET /quit ends it
//	sqlserver load ADDR SECONDS CONNS
//	                               CONNS clients on loopback for SECONDS
//	                               (after half a second of warm-up), then
//	                               prints "requests N rps R p50_us A p99_us B"
//	                               and stops the server with /quit
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

const rows = 10000

func fail(err error) {
	fmt.Fprintln(os.Stderr, "sqlserver:", err)
	os.Exit(1)
}

type item struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	Hits int64  `json:"hits"`
}

func serve(dir string) {
	path := filepath.Join(dir, "items.db")
	os.Remove(path)
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=OFF&_busy_timeout=5000")
	if err != nil {
		fail(err)
	}
	db.SetMaxOpenConns(8)
	if _, err := db.Exec("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, hits INTEGER)"); err != nil {
		fail(err)
	}
	tx, err := db.Begin()
	if err != nil {
		fail(err)
	}
	for i := 1; i <= rows; i++ {
		if _, err := tx.Exec("INSERT INTO items VALUES (?, ?, 0)", i, fmt.Sprintf("item-%d", i)); err != nil {
			fail(err)
		}
	}
	if err := tx.Commit(); err != nil {
		fail(err)
	}

	mux := http.NewServeMux()
	srv := &http.Server{Handler: mux}
	mux.HandleFunc("/item", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.URL.Query().Get("id"), 10, 64)
		if err != nil {
			http.Error(w, "id: a number", http.StatusBadRequest)
			return
		}
		if id%10 == 0 {
			if _, err := db.Exec("UPDATE items SET hits = hits + 1 WHERE id = ?", id); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		var it item
		err = db.QueryRow("SELECT id, name, hits FROM items WHERE id = ?", id).Scan(&it.ID, &it.Name, &it.Hits)
		if err == sql.ErrNoRows {
			http.NotFound(w, r)
			return
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(&it)
	})
	done := make(chan struct{})
	mux.HandleFunc("/quit", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "bye\n")
		go func() {
			srv.Shutdown(context.Background())
			close(done)
		}()
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	os.Stdout.Sync()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fail(err)
	}
	<-done
	db.Close()
	os.Remove(path)
	os.Remove(path + "-wal")
	os.Remove(path + "-shm")
}

func load(addr string, seconds float64, conns int) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	warm := time.Now().Add(500 * time.Millisecond)
	end := warm.Add(time.Duration(seconds * float64(time.Second)))
	var mu sync.Mutex
	var all []time.Duration
	var failed int
	var wg sync.WaitGroup
	for c := 0; c < conns; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(c) + 1))
			var mine []time.Duration
			bad := 0
			for {
				start := time.Now()
				if start.After(end) {
					break
				}
				resp, err := client.Get(fmt.Sprintf("http://%s/item?id=%d", addr, 1+rng.Intn(rows)))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					bad++
					continue
				}
				if start.After(warm) {
					mine = append(mine, time.Since(start))
				}
			}
			mu.Lock()
			all = append(all, mine...)
			failed += bad
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	if resp, err := client.Get("http://" + addr + "/quit"); err == nil {
		resp.Body.Close()
	}
	if len(all) == 0 || failed > 0 {
		fail(fmt.Errorf("%d requests answered, %d failed", len(all), failed))
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) int64 { return all[int(p*float64(len(all)-1))].Microseconds() }
	fmt.Printf("requests %d rps %.0f p50_us %d p99_us %d\n", len(all), float64(len(all))/seconds, pct(0.50), pct(0.99))
}

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "serve" {
		dir := os.TempDir()
		if len(os.Args) >= 3 {
			dir = os.Args[2]
		}
		serve(dir)
		return
	}
	if len(os.Args) == 5 && os.Args[1] == "load" {
		seconds, err1 := strconv.ParseFloat(os.Args[3], 64)
		conns, err2 := strconv.Atoi(os.Args[4])
		if err1 == nil && err2 == nil && seconds > 0 && conns > 0 {
			load(os.Args[2], seconds, conns)
			return
		}
	}
	fmt.Fprintln(os.Stderr, "usage: sqlserver serve [DIR] | sqlserver load ADDR SECONDS CONNS")
	os.Exit(2)
}
