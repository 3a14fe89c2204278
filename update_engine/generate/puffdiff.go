package generate

import (
	"bytes"

	"github.com/vabc-go/vabc/update_engine/puffin"
)

// puffdiffMinor is the first minor version with PUFFDIFF.
const puffdiffMinor = 5

// puffdiffOK reports whether PUFFDIFF operations may be emitted.
func (c *Config) puffdiffOK() bool {
	return c.MinorVersion >= puffdiffMinor && !c.DisablePuffdiff && !c.DisableDiff
}

// tryPuffdiff returns a PUFFDIFF patch turning old into data, or nil when
// data holds no deflate blocks puffin can handle or the patch fails to
// reproduce data. dstDeflates are the deflates of data (Locate is run once
// per unit by the caller).
func (c *Config) tryPuffdiff(old, data []byte, dstDeflates []puffin.BitExtent) []byte {
	if len(dstDeflates) == 0 {
		return nil
	}
	srcDeflates := puffin.Locate(old, c.BlockSize)
	patch, err := puffin.Diff(old, data, srcDeflates, dstDeflates, puffin.DiffOptions{BrotliQuality: c.BrotliQuality})
	if err != nil {
		return nil
	}
	// The patch must apply: a deflate this package misjudged is dropped
	// rather than shipped.
	got, err := puffin.Apply(old, patch, int64(len(data)), 0)
	if err != nil || !bytes.Equal(got, data) {
		return nil
	}
	return patch
}
