package otaflow

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// payloadInfo is the part of `payload info --json` the tests use.
type payloadInfo struct {
	Size                  int64  `json:"size"`
	ManifestSize          int64  `json:"manifest_size"`
	MetadataSize          int64  `json:"metadata_size"`
	MetadataSignatureSize int64  `json:"metadata_signature_size"`
	BlobOffset            int64  `json:"blob_offset"`
	SignaturesOffset      int64  `json:"signatures_offset"` // relative to blob_offset
	SignaturesSize        int64  `json:"signatures_size"`
	Delta                 bool   `json:"delta"`
	Signed                bool   `json:"signed"`
	VABCEnabled           bool   `json:"vabc_enabled"`
	CompressionParam      string `json:"vabc_compression_param"`
	CowVersion            int    `json:"cow_version"`
	Partitions            []struct {
		Name               string `json:"name"`
		NewSize            int64  `json:"new_size"`
		EstimateCowSize    int64  `json:"estimate_cow_size"`
		EstimateOpCountMax int64  `json:"estimate_op_count_max"`
	} `json:"partitions"`
}

// cowInspect is the part of `cowctl inspect --json` the tests use.
type cowInspect struct {
	Header struct {
		MajorVersion int   `json:"major_version"`
		OpCount      int64 `json:"op_count"`
	} `json:"header"`
	Compression  string `json:"compression"`
	MergeOrderOK *bool  `json:"merge_order_ok"`
}

// TestPayloadRoundTrip is issue 7's round trip through the CLIs: generate a
// signed payload (full and incremental, RSA and ECDSA, VABC metadata for COW
// v2 and v3), verify it and reject flipped bits in every signed region,
// extract it over the old images, and build a COW per partition that
// `cowctl apply` turns into the same images.
func TestPayloadRoundTrip(t *testing.T) {
	parts := imageSet(t)
	ks := signingKeys(t)
	root := t.TempDir()
	oldDir, newDir := writeImages(t, root, parts)

	tests := []struct {
		name        string
		incremental bool
		key         keyPair
		cowVersion  int
		compression string // vabc_compression_param
		factor      string // v3 compression factor
		xor         bool
		zip         bool // also write an OTA zip and read the payload from it
		determinism bool // a second run with other --threads gives the same bytes (RSA signatures are deterministic)
	}{
		{name: "full-rsa-cow2-lz4", key: ks[0], cowVersion: 2, compression: "lz4", zip: true},
		{name: "full-ecdsa-cow3-zstd", key: ks[1], cowVersion: 3, compression: "zstd", factor: "64K"},
		{name: "incremental-rsa-cow3-lz4-xor", incremental: true, key: ks[0], cowVersion: 3, compression: "lz4", factor: "64K", xor: true, determinism: true},
		{name: "incremental-ecdsa-cow2-gz", incremental: true, key: ks[1], cowVersion: 2, compression: "gz"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			pl := filepath.Join(dir, "payload.bin")
			props := filepath.Join(dir, "payload_properties.txt")
			args := []string{"generate", "--target", newDir, "-o", pl, "--key", tc.key.priv, "--properties", props,
				"--vabc", "--cow-version", fmt.Sprint(tc.cowVersion), "--vabc-compression", tc.compression,
				fmt.Sprintf("--xor=%v", tc.xor), "--threads", "2"}
			if tc.incremental {
				args = append(args, "--source", oldDir)
			}
			if tc.factor != "" {
				args = append(args, "--compression-factor", tc.factor)
			}
			zipPath := filepath.Join(dir, "ota.zip")
			if tc.zip {
				args = append(args, "--zip", zipPath)
			}
			mustRun(t, "payload", args...)
			if tc.determinism {
				again := filepath.Join(dir, "again.bin")
				args2 := append([]string(nil), args...)
				for k := range args2 {
					switch {
					case args2[k] == pl:
						args2[k] = again
					case args2[k] == props:
						args2[k] = props + ".again"
					case k > 0 && args2[k-1] == "--threads":
						args2[k] = "1"
					}
				}
				mustRun(t, "payload", args2...)
				sameFile(t, again, pl)
				sameFile(t, props+".again", props)
			}

			var info payloadInfo
			mustJSON(t, &info, "payload", "info", "--json", pl)
			if !info.Signed || info.Delta != tc.incremental || !info.VABCEnabled || info.CowVersion != tc.cowVersion || info.CompressionParam != tc.compression {
				t.Fatalf("payload info: signed=%v delta=%v vabc=%v cow_version=%d compression=%q; want true %v true %d %q",
					info.Signed, info.Delta, info.VABCEnabled, info.CowVersion, info.CompressionParam, tc.incremental, tc.cowVersion, tc.compression)
			}
			if len(info.Partitions) != len(parts) {
				t.Fatalf("payload info: %d partitions, want %d", len(info.Partitions), len(parts))
			}

			// Signatures: the right key and the properties file are
			// accepted, the other key is not.
			mustRun(t, "payload", "verify", "--key", tc.key.pub, "--properties", props, pl)
			mustRun(t, "payload", "verify", "--otacerts", tc.key.otacerts, pl)
			if r := run(t, "payload", "verify", "--otacerts", otherKey(ks, tc.key).otacerts, pl); r.code == 0 {
				t.Errorf("payload verify with another key's otacerts.zip accepted the payload:\n%s", r.stdout)
			}
			input := pl // what extract and apply-cow read
			if tc.zip {
				// The zip's stored payload.bin is read in place, its
				// payload_properties.txt checked.
				mustRun(t, "payload", "verify", "--key", tc.key.pub, zipPath)
				input = zipPath
			}
			if r := run(t, "payload", "verify", "--key", tc.key.wrongPublic, pl); r.code == 0 {
				t.Errorf("payload verify with the wrong public key accepted the payload:\n%s", r.stdout)
			}
			flipBits(t, pl, info, tc.key.pub, uint64(i))

			// Extract over the old images: byte for byte the new ones.
			out := filepath.Join(dir, "out")
			args = []string{"extract", "-o", out, "--threads", "2", input}
			if tc.incremental {
				args = append(args[:len(args)-1], "--old", oldDir, input)
			}
			mustRun(t, "payload", args...)
			for _, p := range parts {
				got, err := os.ReadFile(filepath.Join(out, p.name+".img"))
				if err != nil {
					t.Fatal(err)
				}
				sameBytes(t, "payload extract "+p.name, got, p.new)
			}

			// VABC: one COW per partition, merged offline over the old
			// image, equals the extracted image.
			cows := filepath.Join(dir, "cow")
			mustRun(t, "payload", "apply-cow", "--old", oldDir, "-o", cows, "--threads", "2", input)
			for _, pi := range info.Partitions {
				p := pi.Name
				cow := filepath.Join(cows, p+".cow")
				old := filepath.Join(oldDir, p+".img")
				merged := filepath.Join(dir, p+".merged.img")
				extracted := filepath.Join(out, p+".img")
				st, err := os.Stat(cow)
				if err != nil {
					t.Fatal(err)
				}
				if st.Size() > pi.EstimateCowSize {
					t.Errorf("%s: COW is %d bytes, above the manifest's estimate_cow_size %d", p, st.Size(), pi.EstimateCowSize)
				}
				var ins cowInspect
				mustJSON(t, &ins, "cowctl", "inspect", "--verify-merge-sequence", "--json", cow)
				if ins.MergeOrderOK == nil || !*ins.MergeOrderOK {
					t.Errorf("%s: cowctl inspect --verify-merge-sequence: merge_order_ok is not true", p)
				}
				if ins.Header.MajorVersion != tc.cowVersion {
					t.Errorf("%s: COW major version %d, want %d", p, ins.Header.MajorVersion, tc.cowVersion)
				}
				if ins.Compression != tc.compression {
					t.Errorf("%s: COW compression %q, want %q", p, ins.Compression, tc.compression)
				}
				if tc.cowVersion == 3 && ins.Header.OpCount > pi.EstimateOpCountMax {
					t.Errorf("%s: COW has %d ops, above estimate_op_count_max %d", p, ins.Header.OpCount, pi.EstimateOpCountMax)
				}
				mustRun(t, "cowctl", "apply", "--source", old, "--cow", cow, "-o", merged, "--size", fmt.Sprint(pi.NewSize))
				sameFile(t, merged, extracted)
				mustRun(t, "cowctl", "verify", "--source", old, "--cow", cow, "--target", extracted)
			}
			// -o leaves the old images alone.
			for _, p := range parts {
				got, err := os.ReadFile(filepath.Join(oldDir, p.name+".img"))
				if err != nil {
					t.Fatal(err)
				}
				sameBytes(t, "old "+p.name+" after the flow", got, p.old)
			}
		})
	}
}

func otherKey(ks []keyPair, k keyPair) keyPair {
	for _, o := range ks {
		if o.priv != k.priv {
			return o
		}
	}
	panic("one key only")
}

// flipBits flips one bit at a few random positions of every signed region
// (header, manifest, operation blobs) and of the signature data of both
// signatures, and requires `payload verify` to reject each copy.
func flipBits(t *testing.T, pl string, info payloadInfo, pub string, seed uint64) {
	t.Helper()
	orig, err := os.ReadFile(pl)
	if err != nil {
		t.Fatal(err)
	}
	// signatures_offset is relative to the start of the blobs, as in the
	// manifest.
	sigOff := info.BlobOffset + info.SignaturesOffset
	if int64(len(orig)) != info.Size || info.MetadataSize != 24+info.ManifestSize ||
		sigOff+info.SignaturesSize != info.Size || info.BlobOffset != info.MetadataSize+info.MetadataSignatureSize {
		t.Fatalf("payload layout from info does not add up: %+v (file %d bytes)", info, len(orig))
	}
	type region struct {
		name       string
		start, end int64
	}
	regions := []region{
		{"header", 0, 24},
		{"manifest", 24, info.MetadataSize},
		{"blobs", info.BlobOffset, sigOff},
	}
	for _, s := range []struct {
		name     string
		off, len int64
	}{{"metadata signature", info.MetadataSize, info.MetadataSignatureSize}, {"payload signature", sigOff, info.SignaturesSize}} {
		start, end, err := signatureData(orig[s.off : s.off+s.len])
		if err != nil {
			t.Fatalf("%s at %d: %v", s.name, s.off, err)
		}
		regions = append(regions, region{s.name, s.off + start, s.off + end})
	}
	// OTAFLOW_FLIPS=N tries N positions per region instead of 3, with a
	// random seed (logged) instead of the fixed one.
	flips := 3
	if v, err := strconv.Atoi(os.Getenv("OTAFLOW_FLIPS")); err == nil && v > 0 {
		flips = v
		seed = rand.Uint64()
		t.Logf("OTAFLOW_FLIPS=%d: seed %d", flips, seed)
	}
	r := rand.New(rand.NewPCG(seed, 0xf11b))
	bad := filepath.Join(filepath.Dir(pl), "flipped.bin")
	for _, reg := range regions {
		if reg.end <= reg.start {
			t.Fatalf("%s region is empty (%d..%d)", reg.name, reg.start, reg.end)
		}
		for k := 0; k < flips; k++ {
			pos := reg.start + r.Int64N(reg.end-reg.start)
			bit := byte(1) << r.IntN(8)
			b := bytes.Clone(orig)
			b[pos] ^= bit
			if err := os.WriteFile(bad, b, 0o644); err != nil {
				t.Fatal(err)
			}
			res := run(t, "payload", "verify", "--key", pub, bad)
			if res.code == 0 {
				t.Errorf("payload verify accepted a flipped bit (%#02x) at byte %d in the %s:\n%s", bit, pos, reg.name, res.stdout)
			}
			if s := string(res.stderr); strings.Contains(s, "panic:") || strings.Contains(s, "goroutine ") {
				t.Errorf("payload verify crashed on a flipped bit at byte %d in the %s:\n%s", pos, reg.name, s)
			}
		}
	}
	os.Remove(bad)
}

// signatureData returns the byte range of the first signature's data,
// unpadded, inside a serialized Signatures message (field 1: Signature
// {data = 2, unpadded_signature_size = 3}).
func signatureData(b []byte) (start, end int64, err error) {
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return 0, 0, protowire.ParseError(n)
		}
		off += n
		if num != 1 || typ != protowire.BytesType {
			m := protowire.ConsumeFieldValue(num, typ, b[off:])
			if m < 0 {
				return 0, 0, protowire.ParseError(m)
			}
			off += m
			continue
		}
		sig, m := protowire.ConsumeBytes(b[off:])
		if m < 0 {
			return 0, 0, protowire.ParseError(m)
		}
		sigStart := off + m - len(sig)
		var dStart, dLen, unpadded int = -1, 0, -1
		for o := 0; o < len(sig); {
			fnum, ftyp, fn := protowire.ConsumeTag(sig[o:])
			if fn < 0 {
				return 0, 0, protowire.ParseError(fn)
			}
			o += fn
			switch {
			case fnum == 2 && ftyp == protowire.BytesType:
				d, dn := protowire.ConsumeBytes(sig[o:])
				if dn < 0 {
					return 0, 0, protowire.ParseError(dn)
				}
				dStart, dLen = o+dn-len(d), len(d)
				o += dn
			case fnum == 3 && ftyp == protowire.Fixed32Type:
				v, vn := protowire.ConsumeFixed32(sig[o:])
				if vn < 0 {
					return 0, 0, protowire.ParseError(vn)
				}
				unpadded = int(v)
				o += vn
			default:
				vn := protowire.ConsumeFieldValue(fnum, ftyp, sig[o:])
				if vn < 0 {
					return 0, 0, protowire.ParseError(vn)
				}
				o += vn
			}
		}
		if dStart < 0 {
			return 0, 0, fmt.Errorf("signature has no data field")
		}
		if unpadded >= 0 && unpadded < dLen {
			dLen = unpadded
		}
		return int64(sigStart + dStart), int64(sigStart + dStart + dLen), nil
	}
	return 0, 0, fmt.Errorf("no signature in the Signatures message")
}
