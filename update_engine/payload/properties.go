package payload

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Properties is payload_properties.txt: KEY=value lines (spec §1.3).
type Properties map[string]string

// ParseProperties reads KEY=value lines; blank lines are skipped.
func ParseProperties(b []byte) (Properties, error) {
	props := Properties{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("payload_properties.txt line %d: no '=' in %q: %w", n, line, ErrCorrupt)
		}
		props[k] = v
	}
	return props, sc.Err()
}

// CheckProperties compares FILE_SIZE, FILE_HASH, METADATA_SIZE and
// METADATA_HASH (those present) with the payload. FILE_HASH covers the whole
// file including signatures; METADATA_HASH covers [0, metadata_size).
func (p *Payload) CheckProperties(props Properties) error {
	var errs []error
	if v, ok := props["FILE_SIZE"]; ok {
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n != p.size {
			errs = append(errs, fmt.Errorf("FILE_SIZE=%s, payload is %d bytes", v, p.size))
		}
	}
	if v, ok := props["METADATA_SIZE"]; ok {
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n != p.Header.MetadataSize() {
			errs = append(errs, fmt.Errorf("METADATA_SIZE=%s, payload metadata is %d bytes", v, p.Header.MetadataSize()))
		}
	}
	check := func(key string, n int64) {
		v, ok := props[key]
		if !ok {
			return
		}
		want, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(want) != sha256.Size {
			errs = append(errs, fmt.Errorf("%s=%q is not a base64 SHA-256", key, v))
			return
		}
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(p.r, 0, n)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			return
		}
		if got := h.Sum(nil); !bytes.Equal(got, want) {
			errs = append(errs, fmt.Errorf("%s mismatch: properties %x, payload %x", key, want, got))
		}
	}
	check("METADATA_HASH", p.Header.MetadataSize())
	check("FILE_HASH", p.size)
	if len(errs) > 0 {
		return fmt.Errorf("payload_properties.txt: %w: %w", errors.Join(errs...), ErrCorrupt)
	}
	return nil
}
