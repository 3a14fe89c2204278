package apply

import (
	"archive/zip"
	"os"
	"testing"
)

func writeZip(t *testing.T, path string, payloadBin []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	w, _ := zw.Create("META-INF/com/android/metadata")
	w.Write([]byte("ota-type=AB\n"))
	w, _ = zw.CreateHeader(&zip.FileHeader{Name: "payload.bin", Method: zip.Store})
	w.Write(payloadBin)
	w, _ = zw.CreateHeader(&zip.FileHeader{Name: "payload_properties.txt", Method: zip.Store})
	w.Write([]byte("FILE_SIZE=1\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}
