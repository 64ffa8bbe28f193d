package brokertest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/esbridge/esbridge/internal/poll"
)

// A NATSServer is an embedded nats-server with JetStream on 127.0.0.1,
// which a test can stop and start again on the same port and store.
type NATSServer struct {
	t    testing.TB
	port int
	dir  string
	srv  *server.Server

	// Set for a server of a NATSCluster only.
	name        string     // the server's name, unique in its cluster
	clusterPort int        // where the other servers route to it
	routes      []*url.URL // the route URLs of every server of its cluster
}

// RunNATS starts a NATSServer on a free port, with a store in a temporary
// directory, and shuts it down at cleanup.
func RunNATS(t testing.TB) *NATSServer {
	t.Helper()
	ns := &NATSServer{t: t, port: StablePort(t), dir: t.TempDir()}
	ns.Start()
	t.Cleanup(ns.Stop)
	return ns
}

// StablePort returns a free port below the kernel's ephemeral range
// (32768 and up on Linux), for a server that a test stops and starts again
// on the same port (a broker, a proxy in front of one). A server stopped
// and started again on a port of that range may find it taken: the
// bridge, reconnecting to it meanwhile, can be given that very port as its
// own and connect to itself.
func StablePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free port from 20000 to 31999")
	return 0
}

// Start starts the server, on its port and store.
func (ns *NATSServer) Start() {
	ns.t.Helper()
	opts := &server.Options{
		Host: "127.0.0.1", Port: ns.port, JetStream: true, StoreDir: ns.dir,
		NoLog: true, NoSigs: true,
	}
	if ns.name != "" {
		opts.ServerName = ns.name
		opts.Cluster = server.ClusterOpts{Name: "esbridge", Host: "127.0.0.1", Port: ns.clusterPort}
		opts.Routes = ns.routes
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		ns.t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(Timeout) {
		ns.t.Fatal("nats-server not ready")
	}
	ns.srv = srv
}

// Stop shuts the server down, if it runs.
func (ns *NATSServer) Stop() {
	if ns.srv != nil {
		ns.srv.Shutdown()
		ns.srv.WaitForShutdown()
		ns.srv = nil
	}
}

// Restart stops the server and starts it again on the same port and store.
func (ns *NATSServer) Restart() {
	ns.t.Helper()
	ns.Stop()
	ns.Start()
}

// Addr returns the server's HOST:PORT.
func (ns *NATSServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ns.port)) }

// URL returns the server's nats:// URL.
func (ns *NATSServer) URL() string { return "nats://" + ns.Addr() }

// Clients returns the number of client connections to the server.
func (ns *NATSServer) Clients() int { return ns.srv.NumClients() }

// SlowConsumers returns how many times the server cut a client connection
// that did not read what it was sent fast enough.
func (ns *NATSServer) SlowConsumers() uint64 { return ns.srv.NumSlowConsumersClients() }

// Name returns the server's name: its ID, or for a server of a
// NATSCluster the name it has there.
func (ns *NATSServer) Name() string {
	if ns.name != "" {
		return ns.name
	}
	return ns.srv.ID()
}

// Running reports whether the server runs (it was not stopped).
func (ns *NATSServer) Running() bool { return ns.srv != nil }

// A NATSCluster is a cluster of embedded nats-servers on 127.0.0.1, joined
// by routes, each with JetStream and a store of its own, so that streams
// can be replicated (R3 on three servers) and a test can stop any server.
type NATSCluster struct {
	Servers []*NATSServer
}

// RunNATSCluster starts a cluster of n servers, waits until its JetStream
// has a meta leader and every server is current, and shuts the servers
// down at cleanup.
func RunNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	c := &NATSCluster{}
	var routes []*url.URL
	for i := range n {
		ns := &NATSServer{t: t, port: StablePort(t), dir: t.TempDir(), name: fmt.Sprintf("n%d", i+1), clusterPort: StablePort(t)}
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ns.clusterPort))})
		c.Servers = append(c.Servers, ns)
	}
	for _, ns := range c.Servers {
		ns.routes = routes
		ns.Start()
		t.Cleanup(ns.Stop)
	}
	c.WaitJetStream()
	return c
}

// WaitJetStream waits until the running servers agree on a JetStream
// meta leader and each of them is current with it.
func (c *NATSCluster) WaitJetStream() {
	c.Servers[0].t.Helper()
	ok := poll.Wait(Timeout, func() bool {
		leaders := 0
		for _, ns := range c.Servers {
			if !ns.Running() {
				continue
			}
			if !ns.srv.JetStreamIsCurrent() {
				return false
			}
			if ns.srv.JetStreamIsLeader() {
				leaders++
			}
		}
		return leaders == 1
	})
	if !ok {
		c.Servers[0].t.Fatalf("the NATS cluster has no JetStream meta leader after %v", Timeout)
	}
}

// Addrs returns the HOST:PORT of each server, in order.
func (c *NATSCluster) Addrs() []string {
	addrs := make([]string, len(c.Servers))
	for i, ns := range c.Servers {
		addrs[i] = ns.Addr()
	}
	return addrs
}

// Server returns the server named name, or nil.
func (c *NATSCluster) Server(name string) *NATSServer {
	for _, ns := range c.Servers {
		if ns.name == name {
			return ns
		}
	}
	return nil
}

// StreamLeader returns the running server that leads the replicated
// stream of the global account, waiting for one to lead it and to be
// current with it.
func (c *NATSCluster) StreamLeader(stream string) *NATSServer {
	c.Servers[0].t.Helper()
	var leader *NATSServer
	poll.Wait(Timeout, func() bool {
		for _, ns := range c.Servers {
			if ns.Running() && ns.srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
				leader = ns
				return true
			}
		}
		return false
	})
	if leader == nil {
		c.Servers[0].t.Fatalf("stream %s has no leader after %v", stream, Timeout)
	}
	return leader
}
