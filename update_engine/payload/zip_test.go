package payload_test

import (
	"archive/zip"
	"os"
	"testing"
)

func writeZip(t *testing.T, path string, payloadBin []byte, props string, stored bool) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	w, _ := zw.Create("META-INF/com/android/metadata")
	w.Write([]byte("ota-type=AB\n"))
	m := zip.Deflate
	if stored {
		m = zip.Store
	}
	w, _ = zw.CreateHeader(&zip.FileHeader{Name: "payload.bin", Method: m})
	w.Write(payloadBin)
	w, _ = zw.CreateHeader(&zip.FileHeader{Name: "payload_properties.txt", Method: zip.Store})
	w.Write([]byte(props))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}
