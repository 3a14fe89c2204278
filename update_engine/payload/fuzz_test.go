package payload_test

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/vabc-go/vabc/update_engine/payload"
)

// FuzzNewReader parses arbitrary bytes as payload.bin. Rejections must be
// marked errors; accepted payloads must re-encode to a manifest that parses
// again with the same partitions, and every op blob must be readable.
func FuzzNewReader(f *testing.F) {
	f.Add(sample().Build())
	f.Add([]byte("CrAU\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x18\x00"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := payload.NewReader(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			if !errors.Is(err, payload.ErrCorrupt) && !errors.Is(err, payload.ErrUnsupported) {
				t.Fatalf("unmarked error %v", err)
			}
			return
		}
		for _, pu := range p.Manifest.Partitions {
			for _, op := range pu.Operations {
				if _, err := p.Blob(op); err != nil {
					t.Fatalf("validated blob unreadable: %v", err)
				}
			}
		}
		b, err := proto.Marshal(p.Manifest)
		if err != nil {
			t.Fatal(err)
		}
		var again = p.Manifest.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(b, again); err != nil {
			t.Fatalf("re-encoded manifest does not parse: %v", err)
		}
	})
}
