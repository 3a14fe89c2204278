package cow

import "encoding/binary"

// readBuf and writeBuf are little-endian cursors (after archive/zip), so that
// decoding and encoding a record read like mirror images.
type readBuf []byte

func (b *readBuf) uint8() uint8   { v := (*b)[0]; *b = (*b)[1:]; return v }
func (b *readBuf) uint16() uint16 { v := binary.LittleEndian.Uint16(*b); *b = (*b)[2:]; return v }
func (b *readBuf) uint32() uint32 { v := binary.LittleEndian.Uint32(*b); *b = (*b)[4:]; return v }
func (b *readBuf) uint64() uint64 { v := binary.LittleEndian.Uint64(*b); *b = (*b)[8:]; return v }

type writeBuf []byte

func (b *writeBuf) uint8(v uint8)   { (*b)[0] = v; *b = (*b)[1:] }
func (b *writeBuf) uint16(v uint16) { binary.LittleEndian.PutUint16(*b, v); *b = (*b)[2:] }
func (b *writeBuf) uint32(v uint32) { binary.LittleEndian.PutUint32(*b, v); *b = (*b)[4:] }
func (b *writeBuf) uint64(v uint64) { binary.LittleEndian.PutUint64(*b, v); *b = (*b)[8:] }
