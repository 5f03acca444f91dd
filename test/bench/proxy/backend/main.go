// Command backend is the benchmark's origin: it answers every request with
// 1 KiB.
package main

import (
	"flag"
	"log"
	"net/http"
	"strconv"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "listen address (loopback)")
	size := flag.Int("size", 1024, "response body bytes")
	flag.Parse()

	body := make([]byte, *size)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	length := []string{strconv.Itoa(len(body))}
	ctype := []string{"application/octet-stream"}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Length"] = length
		w.Header()["Content-Type"] = ctype
		_, _ = w.Write(body)
	})
	log.Fatal((&http.Server{Addr: *addr, Handler: h}).ListenAndServe())
}
