package apply

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload/payloadtest"
)

// TestPrefixHashOrders extracts images whose ops write their destinations
// out of order, leave holes and span several extents: the hash taken while
// the ops run (prefixHasher) must cover exactly the final image, for any
// number of workers. Hashing a range before its op finished reads zeros
// and fails the verification.
func TestPrefixHashOrders(t *testing.T) {
	const blocks = 64
	raw := func(b []byte, e []*metadata.Extent) (*metadata.InstallOperation, []byte) {
		return op(metadata.InstallOperation_REPLACE, e), b
	}
	tests := []struct {
		name string
		ops  func(image []byte) ([]*metadata.InstallOperation, [][]byte)
	}{
		{"reverse", func(image []byte) (o []*metadata.InstallOperation, d [][]byte) {
			for i := blocks - 1; i >= 0; i-- {
				x, b := raw(image[i*bs:(i+1)*bs], payloadtest.Ext(uint64(i), 1))
				o, d = append(o, x), append(d, b)
			}
			return
		}},
		{"holes", func(image []byte) (o []*metadata.InstallOperation, d [][]byte) {
			for i := 0; i < blocks; i += 8 {
				clear(image[(i+4)*bs : (i+8)*bs]) // blocks no op writes read as zeros
				x, b := raw(image[i*bs:(i+4)*bs], payloadtest.Ext(uint64(i), 4))
				o, d = append(o, x), append(d, b)
			}
			return
		}},
		{"multi-extent", func(image []byte) (o []*metadata.InstallOperation, d [][]byte) {
			// op 0 writes the last and the first blocks; the middle comes after.
			first := append(append([]byte{}, image[(blocks-2)*bs:]...), image[:2*bs]...)
			x, b := raw(first, payloadtest.Ext(blocks-2, 2, 0, 2))
			o, d = append(o, x), append(d, b)
			for i := 2; i < blocks-2; i += 2 {
				x, b := raw(image[i*bs:(i+2)*bs], payloadtest.Ext(uint64(i), 2))
				o, d = append(o, x), append(d, b)
			}
			return
		}},
		{"xz-interleaved", func(image []byte) (o []*metadata.InstallOperation, d [][]byte) {
			for i := range blocks / 16 {
				j := (i*3 + 1) % (blocks / 16) // 1, 0, 3, 2
				chunk := image[j*16*bs : (j+1)*16*bs]
				x := op(metadata.InstallOperation_REPLACE_XZ, payloadtest.Ext(uint64(j*16), 16))
				o, d = append(o, x), append(d, cli(t, chunk, "xz", "-c", "--check=none"))
			}
			return
		}},
	}
	for _, tt := range tests {
		for _, threads := range []int{1, 2, 4} {
			image := img(blocks, 7)
			ops, data := tt.ops(image)
			b := payloadtest.New(bs, 0)
			for i := range ops {
				b.AddOp("system", ops[i], data[i])
			}
			payloadtest.SetInfo(b.Partition("system"), image, nil)
			p := openRaw(t, b.Build())
			out := t.TempDir()
			res, err := Extract(context.Background(), p, Options{OutDir: out, Threads: threads})
			if err != nil {
				t.Fatalf("%s, %d threads: %v", tt.name, threads, err)
			}
			if !res[0].Verified {
				t.Fatalf("%s, %d threads: not verified", tt.name, threads)
			}
			got, err := os.ReadFile(filepath.Join(out, "system.img"))
			if err != nil || !bytes.Equal(got, image) {
				t.Fatalf("%s, %d threads: image differs (%v)", tt.name, threads, err)
			}
		}
	}
}

// TestPrefixHashCancel: an extract that fails in the middle stops the
// hasher too (no goroutine waits forever for ops that never finish).
func TestPrefixHashCancel(t *testing.T) {
	image := img(16, 3)
	b := payloadtest.New(bs, 0)
	b.AddOp("system", op(metadata.InstallOperation_REPLACE, payloadtest.Ext(0, 8)), image[:8*bs])
	bad := op(metadata.InstallOperation_REPLACE_XZ, payloadtest.Ext(8, 8))
	b.AddOp("system", bad, []byte("not xz at all"))
	payloadtest.SetInfo(b.Partition("system"), image, nil)
	p := openRaw(t, b.Build())
	out := t.TempDir()
	if _, err := Extract(context.Background(), p, Options{OutDir: out, Threads: 2}); err == nil {
		t.Fatal("extract of a corrupt op succeeded")
	}
	if left, _ := filepath.Glob(filepath.Join(out, "*")); len(left) > 0 {
		t.Fatalf("files left behind: %v", left)
	}
}
