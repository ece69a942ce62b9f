// Package ports picks loopback ports for the processes a test or a
// benchmark starts and kills.
package ports

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Free returns a free loopback address (127.0.0.1:port) with its port
// below the kernel's ephemeral range (ip_local_port_range), so that while
// a killed process is down no outgoing connection of any process on the
// machine is given its port (a port from :0 would be from that range, and
// could be). It skips the addresses in taken and adds its own. When the
// range leaves no room below it, it falls back to a port from :0.
func Free(taken map[string]bool) (string, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const from = 10_000
	if low > from+1000 {
		for range 1000 {
			addr := fmt.Sprintf("127.0.0.1:%d", from+rand.IntN(low-from))
			if taken[addr] {
				continue
			}
			if l, err := net.Listen("tcp", addr); err == nil {
				_ = l.Close()
				taken[addr] = true
				return addr, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", errors.Join(errors.New("ports: no free loopback port"), err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	taken[addr] = true
	return addr, nil
}
