// A real cgo library (mattn/go-sqlite3, Debian's golang-github-mattn-go-sqlite3-dev)
// under the agent: creates a table, writes, reads back, prints the result.
// With the argument "leak", it also opens a second database and never
// closes it: every block SQLite allocated for it is leaked, and the line
// that made it is the user's, not the library's C code.
package main

import (
	"database/sql"
	"fmt"
	"os"

	_ "github.com/mattn/go-sqlite3"
)

func main() {
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
