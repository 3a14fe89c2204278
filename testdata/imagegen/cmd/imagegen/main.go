// Command imagegen writes deterministic old/new partition image pairs for
// payload tests:
//
//	go run ./testdata/imagegen/cmd/imagegen -o DIR [-seed N] [-blocks N] [-kinds random,ext4,…]
//
// Images land in DIR/old/<kind>.img and DIR/new/<kind>.img.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/vabc-go/vabc/testdata/imagegen"
)

func main() {
	out := flag.String("o", "", "output directory (required)")
	seed := flag.Uint64("seed", 1, "random seed")
	blocks := flag.Int("blocks", 256, "blocks per raw image")
	kinds := flag.String("kinds", "", "comma-separated kinds (default: every raw kind and ext4)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "imagegen: -o DIR is required")
		os.Exit(2)
	}
	list := append(append([]imagegen.Kind(nil), imagegen.RawKinds...), "ext4")
	if *kinds != "" {
		list = nil
		for _, k := range strings.Split(*kinds, ",") {
			list = append(list, imagegen.Kind(k))
		}
	}
	for _, k := range list {
		var old, new []byte
		var err error
		if k == "ext4" {
			old, new, err = imagegen.Ext4Pair(context.Background(), os.TempDir(), *seed, imagegen.Ext4Options{})
		} else {
			old, new, err = imagegen.Raw(k, *seed, *blocks)
		}
		if err == nil {
			err = imagegen.WritePair(*out, string(k), old, new)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "imagegen:", err)
			os.Exit(1)
		}
		fmt.Printf("%s: old %d bytes, new %d bytes\n", k, len(old), len(new))
	}
}
