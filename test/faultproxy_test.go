package test

import (
	"net"
	"sync"
	"testing"
)

// faultProxy is a loopback TCP proxy in front of an API server that a test can break the way a
// network does. pause is a partition: connections stay open, nothing gets through (bytes wait,
// as TCP retransmissions would, until resume), and new connections are accepted but carry
// nothing. reset closes every connection, as a load balancer restart does. refuse stops
// accepting (new connections are refused; open ones go on) until accept.
type faultProxy struct {
	ln       net.Listener
	address  string
	upstream string

	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	conns  map[net.Conn]struct{}
}

func startFaultProxy(t testing.TB, upstream string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, address: ln.Addr().String(), upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	go p.serve(ln)
	t.Cleanup(func() {
		p.refuse()
		p.resume()
		p.reset()
	})
	return p
}

// addr is host:port of the proxy.
func (p *faultProxy) addr() string { return p.address }

func (p *faultProxy) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *faultProxy) refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
}

func (p *faultProxy) accept(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", p.address)
	if err != nil {
		t.Fatalf("proxy listening again on %s: %v", p.address, err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go p.serve(ln)
}

func (p *faultProxy) forward(client net.Conn) {
	p.track(client)
	p.waitPath()
	server, err := net.Dial("tcp", p.upstream)
	if err != nil { // the API server is down: the client sees its connection closed
		p.untrack(client)
		client.Close()
		return
	}
	p.track(server)
	var wg sync.WaitGroup
	for _, dir := range [][2]net.Conn{{client, server}, {server, client}} {
		wg.Go(func() {
			p.copy(dir[1], dir[0])
			dir[1].Close()
			dir[0].Close()
		})
	}
	wg.Wait()
	p.untrack(client)
	p.untrack(server)
}

// copy moves bytes from src to dst, holding each chunk while the path is paused.
func (p *faultProxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.waitPath()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *faultProxy) waitPath() {
	p.mu.Lock()
	for p.paused {
		p.cond.Wait()
	}
	p.mu.Unlock()
}

func (p *faultProxy) pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

func (p *faultProxy) resume() {
	p.mu.Lock()
	p.paused = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// reset closes every connection through the proxy.
func (p *faultProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *faultProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
}

func (p *faultProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}
