package main

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vabc-go/vabc/update_engine/payload"
)

// The stand-in for payload-dumper-go (cgo liblzma; not in Debian, and its
// module cannot be fetched here): a small C program linked against the
// system liblzma (liblzma-dev) and OpenSSL's SHA-256 (libssl-dev; SHA-NI or
// AVX2 like Go's crypto/sha256), built with gcc into a temporary directory
// for the bench only. It does the work payload-dumper-go does per REPLACE_XZ
// op - read the blob, check data_sha256_hash, decode with liblzma, write the
// destination - and then hashes the image against new_partition_info.hash,
// as payload-dumper-go v2 does. It is cleaner than payload-dumper-go: one
// decoder per thread reused across ops (no per-op dictionary allocation),
// decoding straight into a buffer of the op's size and one pwrite per op
// (payload-dumper-go's io.Copy writes 32 KiB at a time). With -T1 it is what
// payload-dumper-go does on a one-partition payload (one goroutine per
// partition, ops in order); -T2 spreads the ops over two threads, which
// payload-dumper-go cannot do within a partition. It fsyncs the image
// before exiting, as `payload extract` does before its rename.
const liblzmaRefC = `
#include <lzma.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

struct op { uint64_t off, len, dst, dlen; unsigned char sha[32]; };
static struct op *ops;
static int nops, pfd, ofd;
static atomic_int next, failed;

static void sha(const void *p, size_t n, unsigned char out[32]) {
	unsigned int k;
	EVP_Digest(p, n, out, &k, EVP_sha256(), NULL);
}

static void *worker(void *arg) {
	(void)arg;
	lzma_stream s = LZMA_STREAM_INIT;
	unsigned char *blob = NULL, *out = NULL;
	size_t bcap = 0, ocap = 0;
	for (;;) {
		int i = atomic_fetch_add(&next, 1);
		if (i >= nops || atomic_load(&failed)) break;
		struct op *o = &ops[i];
		if (o->len > bcap) { bcap = o->len; blob = realloc(blob, bcap); }
		if (o->dlen > ocap) { ocap = o->dlen; out = realloc(out, ocap); }
		if (pread(pfd, blob, o->len, o->off) != (ssize_t)o->len) { fprintf(stderr, "op %d: short read\n", i); atomic_store(&failed, 1); break; }
		unsigned char h[32];
		sha(blob, o->len, h);
		if (memcmp(h, o->sha, 32)) { fprintf(stderr, "op %d: data_sha256_hash mismatch\n", i); atomic_store(&failed, 1); break; }
		if (lzma_stream_decoder(&s, UINT64_MAX, 0) != LZMA_OK) { atomic_store(&failed, 1); break; }
		s.next_in = blob; s.avail_in = o->len; s.next_out = out; s.avail_out = o->dlen;
		lzma_ret r = lzma_code(&s, LZMA_FINISH);
		if (r != LZMA_STREAM_END || s.avail_out != 0) { fprintf(stderr, "op %d: lzma_code %d, %zu bytes short\n", i, r, s.avail_out); atomic_store(&failed, 1); break; }
		if (pwrite(ofd, out, o->dlen, o->dst) != (ssize_t)o->dlen) { fprintf(stderr, "op %d: short write\n", i); atomic_store(&failed, 1); break; }
	}
	lzma_end(&s);
	free(blob); free(out);
	return NULL;
}

static int hex(const char *s, unsigned char *out) {
	for (int i = 0; i < 32; i++) { unsigned v; if (sscanf(s + 2*i, "%2x", &v) != 1) return 0; out[i] = v; }
	return 1;
}

int main(int argc, char **argv) {
	if (argc != 5) { fprintf(stderr, "usage: ref INDEX PAYLOAD OUT THREADS\n"); return 2; }
	FILE *f = fopen(argv[1], "r");
	if (!f) { perror(argv[1]); return 1; }
	unsigned long long size; char hs[65];
	if (fscanf(f, "%llu %64s %d", &size, hs, &nops) != 3) return 1;
	unsigned char want[32];
	if (!hex(hs, want)) return 1;
	ops = calloc(nops, sizeof *ops);
	for (int i = 0; i < nops; i++) {
		unsigned long long a, b, c, d; char x[65];
		if (fscanf(f, "%llu %llu %llu %llu %64s", &a, &b, &c, &d, x) != 5) return 1;
		ops[i].off = a; ops[i].len = b; ops[i].dst = c; ops[i].dlen = d;
		if (!hex(x, ops[i].sha)) return 1;
	}
	fclose(f);
	pfd = open(argv[2], O_RDONLY);
	ofd = open(argv[3], O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (pfd < 0 || ofd < 0 || ftruncate(ofd, size)) { perror("open"); return 1; }
	int nt = atoi(argv[4]);
	pthread_t t[16];
	if (nt < 1 || nt > 16) return 2;
	for (int i = 0; i < nt; i++) pthread_create(&t[i], NULL, worker, NULL);
	for (int i = 0; i < nt; i++) pthread_join(t[i], NULL);
	if (failed) return 1;
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	EVP_DigestInit_ex(c, EVP_sha256(), NULL);
	size_t bsz = 1 << 20;
	unsigned char *buf = malloc(bsz);
	for (unsigned long long off = 0; off < size;) {
		ssize_t n = pread(ofd, buf, size - off < bsz ? size - off : bsz, off);
		if (n <= 0) { perror("pread"); return 1; }
		EVP_DigestUpdate(c, buf, n);
		off += n;
	}
	unsigned char got[32]; unsigned int k;
	EVP_DigestFinal_ex(c, got, &k);
	if (memcmp(got, want, 32)) { fprintf(stderr, "image hash mismatch\n"); return 1; }
	if (fsync(ofd)) { perror("fsync"); return 1; }
	return 0;
}
`

// liblzmaRef builds the stand-in in dir and writes its op index for p (one
// partition of REPLACE_XZ ops with one destination extent each). It returns
// a function running it with the given thread count into out, or a reason
// it cannot run here.
func liblzmaRef(dir string, p *payload.Payload, out string) (func(threads int) (m, error), string) {
	cc, err := exec.LookPath("gcc")
	if err != nil {
		return nil, "gcc is not installed"
	}
	for _, h := range []string{"/usr/include/lzma.h", "/usr/include/openssl/evp.h"} {
		if _, err := os.Stat(h); err != nil {
			return nil, h + " is missing (liblzma-dev and libssl-dev, scripts/deps.sh)"
		}
	}
	src, bin := filepath.Join(dir, "liblzma-ref.c"), filepath.Join(dir, "liblzma-ref")
	if err := os.WriteFile(src, []byte(liblzmaRefC), 0o644); err != nil {
		return nil, err.Error()
	}
	if o, err := exec.Command(cc, "-O2", "-pthread", "-o", bin, src, "-llzma", "-lcrypto").CombinedOutput(); err != nil {
		return nil, fmt.Sprintf("building the liblzma stand-in: %v: %s", err, o)
	}
	pu := p.Manifest.Partitions[0]
	bs := uint64(p.BlockSize())
	f, err := os.Create(filepath.Join(dir, "liblzma-ref.idx"))
	if err != nil {
		return nil, err.Error()
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "%d %x %d\n", pu.GetNewPartitionInfo().GetSize(), pu.GetNewPartitionInfo().GetHash(), len(pu.Operations))
	for _, op := range pu.Operations {
		sum := op.DataSha256Hash
		if sum == nil {
			blob, err := p.Blob(op)
			if err != nil {
				return nil, err.Error()
			}
			s := sha256.Sum256(blob)
			sum = s[:]
		}
		e := op.DstExtents[0]
		fmt.Fprintf(w, "%d %d %d %d %x\n", uint64(p.Header.BlobOffset())+op.GetDataOffset(), op.GetDataLength(),
			e.GetStartBlock()*bs, e.GetNumBlocks()*bs, sum)
	}
	if err := w.Flush(); err != nil {
		return nil, err.Error()
	}
	f.Close()
	return func(threads int) (m, error) {
		start := time.Now()
		c := exec.Command(bin, f.Name(), p.Path, out, strconv.Itoa(threads))
		c.Stderr = os.Stderr
		if err := c.Run(); err != nil {
			return m{}, fmt.Errorf("liblzma stand-in: %w", err)
		}
		return m{time.Since(start), c.ProcessState.UserTime() + c.ProcessState.SystemTime()}, nil
	}, ""
}
