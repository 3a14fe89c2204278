// Package imagegen produces deterministic pairs of partition images (an old
// and a new version) for the tests of the payload generator, the payload
// applier, the COW writer and snapuserd. The same seed always yields the same
// bytes.
//
// Raw kinds mix the content types real partitions have: random
// (incompressible) blocks, compressible text, zero runs, blocks moved around
// between versions, in-place edits, growth and shrinking. The ext4 kind builds
// two directory trees and turns each into a real ext4 image with
// `mkfs.ext4 -d`, so file edits shift allocation the way a rebuilt system
// image does; timestamps, UUID and hash seed are pinned so the image bytes are
// reproducible.
package imagegen

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// BlockSize is the block size of every generated image.
const BlockSize = 4096

// Kind names a way of deriving the new image from the old one.
type Kind string

const (
	Random       Kind = "random"       // incompressible data, a few blocks rewritten
	Compressible Kind = "compressible" // text-like data with small edits
	Zeros        Kind = "zeros"        // long zero runs appearing and disappearing
	Shuffled     Kind = "shuffled"     // old blocks permuted, a few changed
	Grow         Kind = "grow"         // new image larger, old content kept and edited
	Shrink       Kind = "shrink"       // new image smaller
	Mixed        Kind = "mixed"        // regions of every content type, edits of every kind
	Unrelated    Kind = "unrelated"    // new image shares nothing with the old
)

// RawKinds lists every raw kind.
var RawKinds = []Kind{Random, Compressible, Zeros, Shuffled, Grow, Shrink, Mixed, Unrelated}

// Pair is an old/new image pair.
type Pair struct {
	Name     string
	Old, New []byte
}

func newRand(seed uint64, salt string) *rand.Rand {
	var h uint64 = 14695981039346656037
	for _, c := range []byte(salt) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return rand.New(rand.NewPCG(seed, h))
}

func fillRandom(r *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
}

var words = strings.Fields(`android system vendor product boot init service class core user root group
	shell seclabel u:r:init:s0 /system/bin/ /vendor/lib64/ libc.so libbinder.so ro.build.version.sdk=35
	persist.sys import on property:sys.boot_completed=1 setprop write chmod 0644 mkdir <manifest> </manifest>
	<permission name="android.permission.INTERNET"/> 0x00000000 ELF .text .rodata .data .bss {} () ; = ==`)

func fillText(r *rand.Rand, b []byte) {
	i := 0
	for i < len(b) {
		w := words[r.IntN(len(words))]
		if r.IntN(12) == 0 {
			w += "\n"
		} else {
			w += " "
		}
		i += copy(b[i:], w)
	}
}

// fillSemi writes data that compresses moderately: text with random runs.
func fillSemi(r *rand.Rand, b []byte) {
	fillText(r, b)
	for i := 0; i < len(b)/64; i++ {
		p := r.IntN(len(b))
		b[p] = byte(r.Uint32())
	}
}

// Raw returns an old/new pair of the given kind; the old image has blocks
// blocks of BlockSize bytes.
func Raw(kind Kind, seed uint64, blocks int) (old, new []byte, err error) {
	if blocks < 4 {
		return nil, nil, fmt.Errorf("imagegen: %d blocks is too small (need ≥ 4)", blocks)
	}
	r := newRand(seed, string(kind))
	old = make([]byte, blocks*BlockSize)
	switch kind {
	case Random, Shuffled, Unrelated:
		fillRandom(r, old)
	case Compressible:
		fillText(r, old)
	case Zeros, Grow, Shrink, Mixed:
		fillRegions(r, old)
	default:
		return nil, nil, fmt.Errorf("imagegen: unknown kind %q", kind)
	}
	new = append([]byte(nil), old...)
	switch kind {
	case Random:
		for k := 0; k < 1+blocks/16; k++ {
			fillRandom(r, block(new, r.IntN(blocks)))
		}
	case Compressible:
		editBytes(r, new, 1+blocks/8)
	case Zeros:
		for k := 0; k < 3; k++ {
			p, n := r.IntN(blocks), 1+r.IntN(blocks/4+1)
			clear(new[p*BlockSize : min(blocks, p+n)*BlockSize])
		}
		for k := 0; k < 2; k++ {
			p := r.IntN(blocks)
			fillText(r, block(new, p))
		}
	case Shuffled:
		perm := r.Perm(blocks)
		for i, j := range perm {
			copy(block(new, i), block(old, j))
		}
		for k := 0; k < 1+blocks/32; k++ {
			b := block(new, r.IntN(blocks))
			b[r.IntN(BlockSize)] ^= 0x5a
		}
	case Grow:
		extra := make([]byte, (blocks/2+1)*BlockSize)
		fillRegions(r, extra)
		new = append(new, extra...)
		editBytes(r, new, 1+blocks/16)
	case Shrink:
		new = new[:(blocks-blocks/3)*BlockSize]
		editBytes(r, new, 1+blocks/16)
	case Mixed:
		moveRuns(r, new, old, 3)
		editBytes(r, new, 1+blocks/16)
		insertShift(r, new)
		for k := 0; k < 2; k++ {
			p, n := r.IntN(blocks), 1+r.IntN(8)
			clear(new[p*BlockSize : min(blocks, p+n)*BlockSize])
		}
	case Unrelated:
		fillRandom(r, new)
		fillText(r, new[:len(new)/2])
	}
	return old, new, nil
}

func block(b []byte, i int) []byte { return b[i*BlockSize : (i+1)*BlockSize] }

// fillRegions lays out runs of random, text, semi-compressible and zero
// blocks.
func fillRegions(r *rand.Rand, b []byte) {
	blocks := len(b) / BlockSize
	for i := 0; i < blocks; {
		n := min(blocks-i, 1+r.IntN(24))
		region := b[i*BlockSize : (i+n)*BlockSize]
		switch r.IntN(4) {
		case 0:
			fillRandom(r, region)
		case 1:
			fillText(r, region)
		case 2:
			fillSemi(r, region)
		case 3:
			clear(region)
		}
		i += n
	}
}

// editBytes makes n small in-place edits.
func editBytes(r *rand.Rand, b []byte, n int) {
	for k := 0; k < n; k++ {
		p := r.IntN(len(b))
		l := min(len(b)-p, 1+r.IntN(200))
		if r.IntN(2) == 0 {
			fillText(r, b[p:p+l])
		} else {
			for i := p; i < p+l; i++ {
				b[i]++
			}
		}
	}
}

// moveRuns copies n runs of old blocks to other places in new.
func moveRuns(r *rand.Rand, new, old []byte, n int) {
	blocks := len(old) / BlockSize
	for k := 0; k < n; k++ {
		l := 1 + r.IntN(max(1, blocks/8))
		src, dst := r.IntN(blocks-l+1), r.IntN(blocks-l+1)
		copy(new[dst*BlockSize:(dst+l)*BlockSize], old[src*BlockSize:(src+l)*BlockSize])
	}
}

// insertShift inserts a few bytes in the middle and shifts the rest (dropping
// the tail), which misaligns every later block: the bsdiff case.
func insertShift(r *rand.Rand, b []byte) {
	p := r.IntN(len(b) / 2)
	ins := make([]byte, 1+r.IntN(100))
	fillText(r, ins)
	rest := append([]byte(nil), b[p:]...)
	copy(b[p:], ins)
	copy(b[p+len(ins):], rest)
}

// RawPairs returns one pair of each raw kind.
func RawPairs(seed uint64, blocks int) ([]Pair, error) {
	var out []Pair
	for _, k := range RawKinds {
		o, n, err := Raw(k, seed, blocks)
		if err != nil {
			return nil, err
		}
		out = append(out, Pair{Name: string(k), Old: o, New: n})
	}
	return out, nil
}

// File is one file of a directory tree.
type File struct {
	Path string // slash-separated, relative
	Data []byte
}

// Tree is a deterministic directory tree.
type Tree []File

// Ext4Options configures Ext4Pair.
type Ext4Options struct {
	Files     int // files in the old tree (default 40)
	MaxFile   int // largest file in bytes (default 256 KiB)
	ImageSize int // image size in bytes (default: fits the trees with room to spare)
	// NewImageSize, if set, is the size of the new image (partition growth
	// or shrink); default ImageSize.
	NewImageSize int
	Edits        int // files changed between versions (default 3)
}

// Trees returns the old tree and the new one: a few files edited in place,
// one appended to, one removed and one added.
func Trees(seed uint64, o Ext4Options) (old, new Tree) {
	if o.Files == 0 {
		o.Files = 40
	}
	if o.MaxFile == 0 {
		o.MaxFile = 256 << 10
	}
	if o.Edits == 0 {
		o.Edits = 3
	}
	r := newRand(seed, "ext4")
	dirs := []string{"bin", "lib64", "etc/init", "app/Settings", "framework", "usr/share/zoneinfo"}
	for i := 0; i < o.Files; i++ {
		d := dirs[r.IntN(len(dirs))]
		size := r.IntN(o.MaxFile) + 1
		if r.IntN(3) == 0 {
			size = r.IntN(4096) + 1
		}
		data := make([]byte, size)
		switch r.IntN(3) {
		case 0:
			fillRandom(r, data)
		case 1:
			fillText(r, data)
		case 2:
			fillSemi(r, data)
		}
		old = append(old, File{Path: fmt.Sprintf("%s/file%03d", d, i), Data: data})
	}
	new = make(Tree, len(old))
	for i, f := range old {
		new[i] = File{Path: f.Path, Data: f.Data}
	}
	for k := 0; k < o.Edits; k++ {
		i := r.IntN(len(new))
		d := append([]byte(nil), new[i].Data...)
		editBytes(r, d, 1+r.IntN(3))
		new[i].Data = d
	}
	// Append to one file (it grows, later allocations shift).
	i := r.IntN(len(new))
	add := make([]byte, 1+r.IntN(8192))
	fillText(r, add)
	new[i].Data = append(append([]byte(nil), new[i].Data...), add...)
	// Remove one, add one.
	j := r.IntN(len(new))
	new = append(new[:j:j], new[j+1:]...)
	data := make([]byte, 1+r.IntN(o.MaxFile))
	fillSemi(r, data)
	new = append(new, File{Path: "etc/init/added.rc", Data: data})
	return old, new
}

func (t Tree) size() int {
	n := 0
	for _, f := range t {
		n += (len(f.Data) + BlockSize - 1) / BlockSize * BlockSize
	}
	return n
}

// fixed identifiers and time make mkfs.ext4 output reproducible.
const (
	fixedUUID = "5eed0000-7a5e-4c0f-9e4d-000000000001"
	fixedTime = 1700000000
)

// WriteTree materializes t under dir with pinned modes and times.
func WriteTree(dir string, t Tree) error {
	for _, f := range t {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// stageTree writes tree t into a new directory under scratch for a mkfs
// tool and names the image file beside it; done removes both.
func stageTree(scratch string, t Tree) (root, img string, done func(), err error) {
	root, err = os.MkdirTemp(scratch, "tree")
	if err != nil {
		return "", "", nil, err
	}
	img = root + ".img"
	done = func() {
		os.RemoveAll(root)
		os.Remove(img)
	}
	if err := WriteTree(root, t); err != nil {
		done()
		return "", "", nil, err
	}
	return root, img, done, nil
}

// MakeExt4 builds an ext4 image of size bytes from tree t using mkfs.ext4,
// working in scratch (a temporary directory the caller owns).
func MakeExt4(ctx context.Context, scratch string, t Tree, size int) ([]byte, error) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return nil, fmt.Errorf("imagegen: mkfs.ext4 not installed (apt-get install e2fsprogs): %w", err)
	}
	debugfs, err := exec.LookPath("debugfs")
	if err != nil {
		return nil, fmt.Errorf("imagegen: debugfs not installed (apt-get install e2fsprogs): %w", err)
	}
	root, img, done, err := stageTree(scratch, t)
	if err != nil {
		return nil, err
	}
	defer done()
	env := append(os.Environ(), fmt.Sprintf("E2FSPROGS_FAKE_TIME=%d", fixedTime), fmt.Sprintf("SOURCE_DATE_EPOCH=%d", fixedTime))
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-t", "ext4", "-b", fmt.Sprint(BlockSize), "-m", "0",
		"-O", "^has_journal", "-U", fixedUUID, "-E", "hash_seed="+fixedUUID+",root_owner=0:0",
		"-L", "imagegen", "-d", root, img, fmt.Sprintf("%dk", size/1024))
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("imagegen: mkfs.ext4: %v: %s", err, out)
	}
	// mkfs.ext4 -d copies the host's ctime/atime of every file; pin them.
	paths := map[string]bool{"/": true, "/lost+found": true}
	for _, f := range t {
		p := "/" + f.Path
		for p != "/" {
			paths[p] = true
			p = filepath.Dir(p)
		}
	}
	var sorted []string
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)
	var script bytes.Buffer
	for _, p := range sorted {
		for _, field := range []string{"atime", "ctime", "mtime", "crtime"} {
			fmt.Fprintf(&script, "sif %s %s 0x%x\n", p, field, fixedTime)
		}
	}
	cmd = exec.CommandContext(ctx, debugfs, "-w", "-f", "-", img)
	cmd.Env = env
	cmd.Stdin = &script
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("imagegen: debugfs: %v: %s", err, out)
	}
	return os.ReadFile(img)
}

// Ext4Pair builds old and new ext4 images from Trees (same size unless
// NewImageSize is set).
func Ext4Pair(ctx context.Context, scratch string, seed uint64, o Ext4Options) (old, new []byte, err error) {
	ot, nt := Trees(seed, o)
	size := o.ImageSize
	if size == 0 {
		size = max(ot.size(), nt.size())*3/2 + 2<<20
		size = (size + 1<<20 - 1) &^ (1<<20 - 1)
	}
	if old, err = MakeExt4(ctx, scratch, ot, size); err != nil {
		return nil, nil, err
	}
	newSize := size
	if o.NewImageSize != 0 {
		newSize = o.NewImageSize
	}
	if new, err = MakeExt4(ctx, scratch, nt, newSize); err != nil {
		return nil, nil, err
	}
	return old, new, nil
}

// WritePair writes pair images as DIR/old/NAME.img and DIR/new/NAME.img, the
// layout `payload generate --source DIR/old --target DIR/new` reads.
func WritePair(dir, name string, old, new []byte) error {
	for sub, data := range map[string][]byte{"old": old, "new": new} {
		if data == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, sub, name+".img"), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
