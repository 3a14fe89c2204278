// Command mkcow regenerates the binary COW fixtures in cow/testdata from
// cow/internal/cowfixture (run from the repository root):
//
//	go run ./cow/testdata/mkcow [-dir cow/testdata]
//
// cow's TestFixtures rebuilds every fixture in memory and compares it with
// the checked-in file byte for byte.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vabc-go/vabc/cow/internal/cowfixture"
)

func main() {
	dir := flag.String("dir", "cow/testdata", "output directory")
	flag.Parse()
	for _, fx := range cowfixture.All() {
		b, err := fx.Bytes()
		if err != nil {
			fmt.Fprintln(os.Stderr, "mkcow:", err)
			os.Exit(1)
		}
		p := filepath.Join(*dir, fx.Name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "mkcow:", err)
			os.Exit(1)
		}
		fmt.Printf("%s: %d bytes — %s\n", p, len(b), fx.About)
	}
}
