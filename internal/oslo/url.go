package oslo

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidTransportURL is wrapped by every error ParseTransportURL returns.
var ErrInvalidTransportURL = errors.New("invalid transport_url")

// Defaults kombu fills in for parts a transport_url leaves out.
const (
	DefaultPort     = 5672
	DefaultHostname = "localhost"
	DefaultUsername = "guest"
	DefaultPassword = "guest" //nolint:gosec // kombu's well-known default, not a secret
	DefaultVHost    = "/"
)

// Host is one broker of a transport_url, with kombu's defaults filled in:
// an empty hostname is "localhost", a missing port 5672 (also with ssl on:
// give 5671 explicitly, as in oslo), an empty username or password "guest".
type Host struct {
	Hostname string // IPv6 literals without brackets
	Port     int
	Username string
	Password string
}

// Addr is host:port, IPv6 literals in brackets.
func (h Host) Addr() string { return net.JoinHostPort(h.Hostname, strconv.Itoa(h.Port)) }

// String is user@host:port; the password is never printed.
func (h Host) String() string { return h.Username + "@" + h.Addr() }

// GoString keeps the password out of %#v.
func (h Host) GoString() string {
	return fmt.Sprintf("oslo.Host{Hostname:%q, Port:%d, Username:%q, Password:\"***\"}", h.Hostname, h.Port, h.Username)
}

// TransportURL is a parsed oslo transport_url.
type TransportURL struct {
	// Scheme is "rabbit" or "kombu" (lower case).
	Scheme string
	// Hosts are in URL order; the runtime shuffles them once, as oslo does.
	Hosts []Host
	// VirtualHost is percent-decoded; an empty path gives "/".
	VirtualHost string
	// Options are the query parameters: names of [oslo_messaging_rabbit]
	// options, each with its values in URL order (oslo joins repeated keys
	// with ","). They override the configuration in ApplyOptions.
	Options map[string][]string
}

// ParseTransportURL parses raw as oslo's TransportURL.parse and kombu do:
//
//	rabbit://user:pass@host:port[,user2:pass2@host2:port2...]/virtual_host?option=value&...
//
// Differences, all failing closed: amqp:// and any scheme but rabbit/kombu
// are rejected; a fragment, an empty query value, malformed percent-encoding,
// a bad port, an unbracketed or invalid IPv6 literal and control characters
// are errors where Python would drop or misread them; query option names
// and values are checked against [RabbitOptions] here already rather than
// when the driver loads. Every error wraps ErrInvalidTransportURL and names
// the problem; none of them quotes a password.
func ParseTransportURL(raw string) (*TransportURL, error) {
	u, err := parseTransportURL(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidTransportURL, err)
	}
	scratch := DefaultRabbitOptions()
	if err := u.ApplyOptions(&scratch); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidTransportURL, err)
	}
	return u, nil
}

func parseTransportURL(raw string) (*TransportURL, error) {
	for _, r := range raw {
		if r < 0x20 || r == 0x7f || r == ' ' {
			return nil, errors.New("contains a space or control character (percent-encode it)")
		}
	}
	if !utf8.ValidString(raw) {
		return nil, errors.New("is not valid UTF-8")
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || scheme == "" {
		if raw == "" {
			return nil, errors.New("is empty")
		}
		return nil, errors.New(`has no scheme: want "rabbit://..."`)
	}
	scheme = strings.ToLower(scheme)
	switch scheme {
	case "rabbit", "kombu":
	case "amqp", "amqps":
		return nil, fmt.Errorf("scheme %q selects oslo.messaging's AMQP 1.0 driver, not RabbitMQ (AMQP 0-9-1): use rabbit://", scheme)
	default:
		return nil, fmt.Errorf("scheme %q is not supported: only rabbit:// (or its alias kombu://) selects the RabbitMQ driver", scheme)
	}
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		return nil, errors.New(`has a fragment: percent-encode "#" in credentials as %23`)
	}
	rest, rawQuery, _ := strings.Cut(rest, "?")
	netloc, path, hasPath := strings.Cut(rest, "/")

	u := &TransportURL{Scheme: scheme, VirtualHost: DefaultVHost, Options: map[string][]string{}}
	if hasPath && path != "" {
		vhost, err := unescape(path, false)
		if err != nil {
			return nil, fmt.Errorf("virtual host: %w", err)
		}
		u.VirtualHost = vhost
	}
	for i, hs := range strings.Split(netloc, ",") {
		if hs == "" {
			continue // oslo skips empty entries
		}
		h, err := parseHost(hs)
		if err != nil {
			return nil, fmt.Errorf("host %d: %w", i+1, err)
		}
		u.Hosts = append(u.Hosts, h)
	}
	if len(u.Hosts) == 0 {
		// rabbit:// alone: oslo's driver connects to guest:guest@localhost:5672.
		u.Hosts = []Host{{Hostname: DefaultHostname, Port: DefaultPort, Username: DefaultUsername, Password: DefaultPassword}}
	}
	if err := parseQuery(rawQuery, u.Options); err != nil {
		return nil, err
	}
	return u, nil
}

func parseHost(s string) (Host, error) {
	var h Host
	hostport := s
	if at := strings.LastIndexByte(s, '@'); at >= 0 {
		userinfo := s[:at]
		hostport = s[at+1:]
		user, pass, hasPass := strings.Cut(userinfo, ":")
		var err error
		if h.Username, err = unescape(user, false); err != nil {
			return h, fmt.Errorf("username: %w", err)
		}
		if hasPass {
			if h.Password, err = unescape(pass, false); err != nil {
				return h, errors.New("password: invalid percent-encoding (encode a literal \"%\" as %25)")
			}
		}
	}
	var port string
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return h, errors.New(`IPv6 literal lacks its closing "]"`)
		}
		lit := hostport[1:end]
		after := hostport[end+1:]
		switch {
		case after == "":
		case after[0] == ':':
			port = after[1:]
		default:
			return h, fmt.Errorf(`unexpected %q after "]"`, after)
		}
		zoneless, zone, hasZone := strings.Cut(lit, "%25")
		addr, err := netip.ParseAddr(zoneless)
		if err != nil || !addr.Is6() || strings.Contains(zoneless, "%") {
			return h, fmt.Errorf("%q is not an IPv6 address", lit)
		}
		h.Hostname = zoneless
		if hasZone {
			if zone == "" {
				return h, fmt.Errorf("%q has an empty IPv6 zone", lit)
			}
			h.Hostname += "%" + zone
		}
	} else {
		name, p, hasPort := strings.Cut(hostport, ":")
		if hasPort {
			if strings.Contains(p, ":") {
				// Not quoted: without "@" this may be user:password.
				return h, errors.New("too many colons: put IPv6 addresses in brackets, e.g. [fd00::3]:5672, and percent-encode \"/\", \"?\", \"#\" and \"@\" in credentials")
			}
			port = p
		}
		if err := checkHostname(name); err != nil {
			return h, err
		}
		h.Hostname = name
	}
	h.Port = DefaultPort
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '+' || port[0] == '-' {
			// Not quoted: an unencoded "/" in a password ends up here.
			return h, errors.New("port is not a number from 1 to 65535 (percent-encode \"/\", \"?\", \"#\" and \"@\" in credentials)")
		}
		h.Port = n
	}
	if h.Hostname == "" {
		h.Hostname = DefaultHostname
	}
	if h.Username == "" {
		h.Username = DefaultUsername
	}
	if h.Password == "" {
		h.Password = DefaultPassword
	}
	return h, nil
}

// checkHostname allows DNS names and IPv4 addresses: ASCII letters,
// digits, "-", "." and "_", plus non-ASCII letters of internationalised
// names. Anything else cannot be a broker's name and is most likely an
// unencoded credential character.
func checkHostname(name string) error {
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
		case r >= 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r)):
		default:
			return fmt.Errorf("hostname %q has an invalid character %q", name, r)
		}
	}
	return nil
}

// parseQuery parses a query as Python's parse_qs, strictly: empty values,
// keys without "=" and bad escapes are errors instead of being dropped.
func parseQuery(raw string, into map[string][]string) error {
	if raw == "" {
		return nil
	}
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, hasEq := strings.Cut(part, "=")
		key, err := unescape(k, true)
		if err != nil {
			return fmt.Errorf("query option %q: %w", k, err)
		}
		if key == "" {
			return fmt.Errorf("query parameter %q has no option name", part)
		}
		if !hasEq || v == "" {
			return fmt.Errorf("query option %q has no value (oslo would silently ignore it)", key)
		}
		val, err := unescape(v, true)
		if err != nil {
			return fmt.Errorf("query option %q: %w", key, err)
		}
		into[key] = append(into[key], val)
	}
	return nil
}

// unescape percent-decodes s ("+" means space in queries only, as in
// Python's unquote and parse_qs), requiring well-formed escapes and UTF-8.
func unescape(s string, query bool) (string, error) {
	var out string
	var err error
	if query {
		out, err = url.QueryUnescape(s)
	} else {
		out, err = url.PathUnescape(s)
	}
	if err != nil {
		return "", errors.New(`invalid percent-encoding (encode a literal "%" as %25)`)
	}
	if !utf8.ValidString(out) {
		return "", errors.New("percent-encoding does not decode to UTF-8")
	}
	return out, nil
}

// ApplyOptions sets the query options of u on o, each converted with its
// option's type (booleans with oslo's spellings, integers, floats; repeated
// keys joined with "," as oslo does). A name that is not an
// [oslo_messaging_rabbit] option, or a value that does not parse, is an
// error naming the option; all of them are reported at once. Options are
// applied in name order; o is only partly updated on error.
func (u *TransportURL) ApplyOptions(o *RabbitOptions) error {
	keys := make([]string, 0, len(u.Options))
	for k := range u.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		if err := o.Set(k, strings.Join(u.Options[k], ",")); err != nil {
			errs = append(errs, fmt.Errorf("transport_url query: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Redacted is the URL for logs, with every password replaced by "***".
// Usernames, hosts, the virtual host and the options stay readable.
func (u *TransportURL) Redacted() string {
	var b strings.Builder
	b.WriteString(u.Scheme)
	b.WriteString("://")
	for i, h := range u.Hosts {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(url.User(h.Username).String())
		b.WriteString(":***@")
		host := h.Hostname
		if strings.Contains(host, ":") {
			host = "[" + strings.Replace(host, "%", "%25", 1) + "]"
		}
		b.WriteString(host)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(h.Port))
	}
	b.WriteByte('/')
	b.WriteString(url.PathEscape(u.VirtualHost))
	if len(u.Options) > 0 {
		keys := make([]string, 0, len(u.Options))
		for k := range u.Options {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		q := url.Values{}
		for _, k := range keys {
			q[k] = u.Options[k]
		}
		b.WriteByte('?')
		b.WriteString(q.Encode())
	}
	return b.String()
}

// String is Redacted: a TransportURL never prints a password.
func (u *TransportURL) String() string { return u.Redacted() }

// GoString keeps passwords out of %#v.
func (u *TransportURL) GoString() string { return "oslo.TransportURL(" + u.Redacted() + ")" }

// LogValue makes slog print the redacted URL.
func (u *TransportURL) LogValue() slog.Value { return slog.StringValue(u.Redacted()) }

// AMQPURI is the amqp091-go URI for host i (amqps:// when ssl is set),
// credentials and virtual host included: pass it to amqp091.DialConfig or
// amqp091.ParseURI, never to a log. It panics if i is out of range.
func (u *TransportURL) AMQPURI(i int, ssl bool) string {
	h := u.Hosts[i]
	scheme := "amqp"
	if ssl {
		scheme = "amqps"
	}
	vhost := u.VirtualHost
	if vhost == "" {
		vhost = DefaultVHost
	}
	uri := url.URL{
		Scheme:  scheme,
		User:    url.UserPassword(h.Username, h.Password),
		Host:    h.Addr(), // url.URL escapes an IPv6 zone's "%"
		Path:    "/" + vhost,
		RawPath: "/" + url.PathEscape(vhost),
	}
	return uri.String()
}
