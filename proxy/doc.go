// Package proxy is vigil's ingress proxy: it routes HTTP requests by
// networking.k8s.io/v1 Ingress rules to the ready endpoints of Services.
//
// Roles: SetConfig turns Ingresses, Services and TLS Secrets into an
// immutable routing table and swaps it in atomically; SetEndpoints swaps
// the endpoint snapshot of every Service port; Drain waits for the requests
// still running on endpoints that left rotation; ServeHTTP and Serve
// answer clients. Requests never take a lock the control plane holds.
//
// # Matching
//
// Hosts compare without case, with any port in the Host header ignored
// (the header itself is forwarded unchanged). A rule host is exact or a
// one-label wildcard: "*.foo.com" covers "bar.foo.com" only. Rules for one
// host from several Ingresses merge. A request goes to the most specific
// host that has a matching path: exact host, then wildcard, then rules
// without host, then the oldest Ingress's defaultBackend, else 404.
//
// Paths follow the Kubernetes docs: Exact compares the whole path; Prefix
// compares element by element on "/" with a trailing slash ignored; both
// are case-sensitive; the longest match wins and Exact wins a tie.
// ImplementationSpecific is matched as Prefix. When two Ingresses claim the
// same host and path, or both set a defaultBackend, the oldest wins
// (creation time, then namespace/name) and SetConfig reports the other.
//
// The path routed is the path forwarded. Before matching, escapes of
// unreserved characters are decoded, runs of "/" merged and dot segments
// resolved ("%2e%2e" included); ".." above the root answers 400. Other
// escapes, "%2F" among them, are forwarded as sent and never split a
// segment. The query is forwarded as sent.
//
// A backend names a Service port by number or by name, resolved through
// the Service's spec.ports to the port number endpoints are keyed by. A
// backend that cannot be resolved is reported and answers 503, as does a
// Service port without ready endpoints. Ingress classes: see Options.
//
// # Health
//
// Only the latest SetEndpoints snapshot gets traffic. On top of it,
// passive checks eject an endpoint after ConnectFailures failed connects
// or Consecutive5xx failures in a row (5xx answers, resets, timeouts),
// for BaseEjectionTime times the number of its ejections, capped at
// MaxEjectionTime. The last usable endpoint of a Service is never
// ejected, nor more than MaxEjectionPercent (the first ejection excepted);
// if every untried endpoint is ejected, ejection is ignored.
//
// A failed connect is retried on another endpoint for any method, provided
// the body can be sent again (it was buffered, within MaxBufferedBody, or
// none of it was read). A reset before the response head is retried only
// for idempotent methods with a buffered or empty body. 5xx answers and
// timeouts are not retried.
//
// Balancing is per Service, by the annotation vigil.dev/load-balancer:
// "round-robin" (the default) or "least-request" (two random choices, the
// one with fewer requests in flight wins).
//
// # HTTP
//
// Hop-by-hop headers (RFC 9110 7.6.1, and every header a Connection token
// names) are removed both ways; "TE: trailers" is kept. X-Forwarded-For,
// -Proto and -Host are set; what a client sent is kept only from
// TrustedProxies, and from others Forwarded and X-Real-Ip are dropped.
// Upgrade requests (WebSocket) are tunnelled. A response without Server
// gets "Server: vigil", one without Date gets Date; a request without
// User-Agent gets none. The head of a response of unknown length (a
// stream, such as server-sent events) goes out before its body does. A
// backend that fails mid-body has the client's connection cut, so that a
// truncated body is not taken for a whole one; on the direct path, while
// none of the response has left vigil's buffer yet, the client gets a 502
// instead. A client that hangs up, or half-closes, before its response is
// counted as 499, not as a backend failure, and gets no response. Backends are spoken to over
// HTTP/1.1 with keep-alive; clients may use HTTP/1.1, or HTTP/2 over TLS.
//
// # Serving
//
// Over TLS, net/http serves every request (ServeHTTP). The plain listener
// runs its own loop first (h1.go): a bodiless GET or HEAD in HTTP/1.1 in
// origin form, the bulk of ingress traffic, is parsed in place, forwarded
// over the proxy's backend connection pool (upstream.go) and its response
// relayed from buffer to buffer, with no per-request goroutine, context or
// header map. The parser is strict: a request with a body, an Upgrade, an
// Expect, a folded or malformed line, a head beyond 4 KiB or anything else
// unusual goes, with the bytes read so far, to net/http, which serves the
// rest of that connection as it serves TLS. Both paths share the routing,
// the balancing loop, passive health, metrics and the access log. On the
// direct path a backend slower than 50 ms has the client's connection
// watched meanwhile, so that a hang-up aborts the request and counts as 499;
// a hang-up within those 50 ms, or while a body streams, shows when a write
// to the client fails. Requests with a body or an Upgrade go through
// net/http's Transport; the other requests net/http serves use the pool.
//
// TLS certificates come from kubernetes.io/tls Secrets named in spec.tls,
// chosen by SNI: exact name, then wildcard, then the Secret of an entry
// without hosts; with none of them the handshake fails. Plain HTTP serves
// the same routes (there is no redirect to HTTPS).
package proxy
