package declarative

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"
)

// refusedByDefault are the addresses an HTTP step never reaches unless an
// IP or CIDR entry of allow_hosts covers them: link-local ranges (where
// cloud metadata services live) and the known metadata addresses.
var refusedByDefault = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),     // IPv4 link-local, incl. 169.254.169.254 (AWS, GCP, Azure, ...)
	netip.MustParsePrefix("fe80::/10"),          // IPv6 link-local
	netip.MustParsePrefix("fd00:ec2::254/128"),  // AWS metadata over IPv6
	netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud metadata
}

// metadataNames are host names of metadata services, refused unless listed
// by name in allow_hosts.
var metadataNames = []string{"metadata.google.internal", "metadata.goog"}

// hostPolicy decides which destinations an HTTP step may reach.
type hostPolicy struct {
	restricted bool // allow_hosts was given: only what it lists
	names      map[string]bool
	suffixes   []string // "*.example.com" as ".example.com"
	prefixes   []netip.Prefix
}

// parseAllowHost adds one allow_hosts entry: a host name, *.domain, an IP
// address or a CIDR.
func (h *hostPolicy) add(entry string) error {
	e := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(entry), "."))
	if pfx, err := netip.ParsePrefix(e); err == nil {
		h.prefixes = append(h.prefixes, pfx.Masked())
		return nil
	}
	if ip, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
		h.prefixes = append(h.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
		return nil
	}
	name, wild := strings.CutPrefix(e, "*.")
	if !validHostName(name) {
		return fmt.Errorf("%q: want a host name, *.domain, an IP address or a CIDR (no scheme, port or path)", entry)
	}
	if wild {
		h.suffixes = append(h.suffixes, "."+name)
	} else {
		h.names[name] = true
	}
	return nil
}

func newHostPolicy(entries []string) (*hostPolicy, []error) {
	h := &hostPolicy{restricted: len(entries) > 0, names: map[string]bool{}}
	var errs []error
	for _, e := range entries {
		if err := h.add(e); err != nil {
			errs = append(errs, err)
		}
	}
	return h, errs
}

func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func (h *hostPolicy) covers(ip netip.Addr) bool {
	return slices.ContainsFunc(h.prefixes, func(p netip.Prefix) bool { return p.Contains(ip) })
}

// checkHost checks a URL's host (before any connection).
func (h *hostPolicy) checkHost(host string) error {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.WithZone("").Unmap()
		if h.restricted && !h.covers(ip) {
			return fmt.Errorf("%w: %s is not in allow_hosts", ErrDestinationRefused, host)
		}
		return h.checkIP(ip)
	}
	if slices.Contains(metadataNames, host) && !h.names[host] {
		return fmt.Errorf("%w: %s is a cloud metadata host (list it, and its address, in allow_hosts to call it)", ErrDestinationRefused, host)
	}
	if h.restricted && !h.names[host] && !slices.ContainsFunc(h.suffixes, func(s string) bool { return strings.HasSuffix(host, s) }) {
		return fmt.Errorf("%w: host %s is not in allow_hosts", ErrDestinationRefused, host)
	}
	return nil
}

// checkIP checks an address about to be dialed: link-local and metadata
// addresses only when an IP or CIDR entry lists them.
func (h *hostPolicy) checkIP(ip netip.Addr) error {
	ip = ip.WithZone("").Unmap()
	for _, p := range refusedByDefault {
		if p.Contains(ip) && !h.covers(ip) {
			return fmt.Errorf("%w: %s is a link-local or cloud metadata address (list it in allow_hosts to call it)", ErrDestinationRefused, ip)
		}
	}
	return nil
}

// dialer returns a DialContext that checks every address actually dialed
// (after DNS resolution), so a name that resolves, or later re-resolves,
// to a refused address is caught (DNS rebinding).
func (h *hostPolicy) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{
		Timeout:   30 * time.Second,
		KeepAlive: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: cannot check the dialed address %q: %v", ErrDestinationRefused, address, err)
			}
			return h.checkIP(ap.Addr())
		},
	}
	return d.DialContext
}
