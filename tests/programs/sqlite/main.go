// A real cgo library (mattn/go-sqlite3, Debian's golang-github-mattn-go-sqlite3-dev)
// under the agent: creates a table, writes, reads back, prints the result.
// With the argument "leak", it also opens a second database and never
// closes it: every block SQLite allocated for it is leaked, and the line
// that made it is the user's, not the library's C code. With "udf", a SQL
// function written in Go (SQLite calls back into Go for each row) leaks a
// C block of 77 bytes per row of a query over 5 rows.
package main

// #include <stdlib.h>
import "C"

import (
	"database/sql"
	"fmt"
	"os"
	"unsafe"

	sqlite3 "github.com/mattn/go-sqlite3"
)

var kept []unsafe.Pointer

// tag is called by SQLite, from inside sqlite3_step, for each row.
func tag(id int64) int64 {
	kept = append(kept, C.malloc(77)) // LEAK: 77 bytes per row
	return id * 2
}

func udf() {
	sql.Register("sqlite3_udf", &sqlite3.SQLiteDriver{
		ConnectHook: func(conn *sqlite3.SQLiteConn) error {
			return conn.RegisterFunc("tag", tag, true)
		},
	})
	db, err := sql.Open("sqlite3_udf", ":memory:")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer db.Close()
	db.Exec("CREATE TABLE t (id INTEGER)")
	for i := 1; i <= 5; i++ {
		db.Exec("INSERT INTO t VALUES (?)", i)
	}
	var sum int64
	if err := db.QueryRow("SELECT SUM(tag(id)) FROM t").Scan(&sum); err != nil { // QUERY CALLS tag
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("sum", sum, "leaked", len(kept))
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "udf" {
		udf()
		return
	}
	db, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for i := 0; i < 200; i++ {
		if _, err := db.Exec("INSERT INTO t (name) VALUES (?)", fmt.Sprintf("name-%03d", i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	var n int
	var last string
	if err := db.QueryRow("SELECT COUNT(*), MAX(name) FROM t").Scan(&n, &last); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rows, err := db.Query("SELECT id, name FROM t WHERE id % 50 = 0 ORDER BY id")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for rows.Next() {
		var id int
		var name string
		rows.Scan(&id, &name)
		fmt.Println(id, name)
	}
	rows.Close()
	fmt.Println("rows", n, "last", last)
	if len(os.Args) > 1 && os.Args[1] == "leak" {
		leaked, _ := sql.Open("sqlite3", ":memory:")
		if err := leaked.Ping(); err != nil { // LEAK: a connection never closed
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
