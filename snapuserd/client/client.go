// Package client is the Go counterpart of AOSP's SnapuserdClient
// (snapuserd_client.cpp, spec snapuserd.md §9): connect to the control
// socket with retries, then exchange one unframed message and one reply
// (≤ 512 bytes) per call.
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vabc-go/vabc/snapuserd/proto"
)

// Client is one control connection. Calls are lock-step; do not share a
// Client between goroutines without external locking.
type Client struct {
	conn    net.Conn
	timeout time.Duration // per-reply read deadline; 0 = none
}

// ErrNotActive is returned when the daemon does not answer "active".
var ErrNotActive = errors.New("snapuserd: daemon not active")

// Connect dials path, retrying every 100 ms on ECONNREFUSED, ENOENT and
// EINTR until timeout (0: one try), then performs the query→active
// handshake.
func Connect(ctx context.Context, path string, timeout time.Duration) (*Client, error) {
	return connect(ctx, path, timeout, 100*time.Millisecond, true)
}

// TryConnect is Connect with 10 ms retries that gives up at once if the
// socket does not exist.
func TryConnect(ctx context.Context, path string, timeout time.Duration) (*Client, error) {
	return connect(ctx, path, timeout, 10*time.Millisecond, false)
}

func connect(ctx context.Context, path string, timeout, every time.Duration, retryENOENT bool) (*Client, error) {
	deadline := time.Now().Add(timeout)
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			c := &Client{conn: conn, timeout: 30 * time.Second}
			reply, err := c.Query()
			if err != nil {
				conn.Close()
				return nil, err
			}
			if reply != proto.ReplyActive {
				conn.Close()
				return nil, fmt.Errorf("%w: query answered %q", ErrNotActive, reply)
			}
			return c, nil
		}
		retry := errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EINTR) ||
			(retryENOENT && errors.Is(err, syscall.ENOENT))
		if !retry || time.Now().Add(every).After(deadline) {
			return nil, fmt.Errorf("snapuserd: connect %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(every):
		}
	}
}

// NewClient wraps an established connection (no handshake).
func NewClient(conn net.Conn) *Client { return &Client{conn: conn} }

// SetTimeout sets the per-reply read deadline (0 = wait forever).
func (c *Client) SetTimeout(d time.Duration) { c.timeout = d }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Send writes one message (one write).
func (c *Client) Send(msg string) error {
	if len(msg) > proto.MaxPacketSize {
		return fmt.Errorf("snapuserd: message of %d bytes exceeds %d", len(msg), proto.MaxPacketSize)
	}
	_, err := c.conn.Write([]byte(msg))
	return err
}

// Receive reads one reply (one read of at most 512 bytes).
func (c *Client) Receive() (string, error) {
	if c.timeout > 0 {
		c.conn.SetReadDeadline(time.Now().Add(c.timeout))
		defer c.conn.SetReadDeadline(time.Time{})
	}
	buf := make([]byte, proto.MaxPacketSize)
	n, err := c.conn.Read(buf)
	if n == 0 && err == nil {
		err = errors.New("snapuserd: empty reply")
	}
	if err != nil {
		return "", fmt.Errorf("snapuserd: receive: %w", err)
	}
	return string(buf[:n]), nil
}

// call sends msg and returns the reply.
func (c *Client) call(msg string) (string, error) {
	if err := c.Send(msg); err != nil {
		return "", fmt.Errorf("snapuserd: send %q: %w", strings.SplitN(msg, ",", 2)[0], err)
	}
	return c.Receive()
}

func expectSuccess(cmd, reply string, err error) error {
	if err != nil {
		return err
	}
	if reply != proto.ReplySuccess {
		return fmt.Errorf("snapuserd: %s: daemon answered %q", cmd, reply)
	}
	return nil
}

// Query sends "query" and returns the reply ("active" or "passive").
func (c *Client) Query() (string, error) { return c.call("query") }

// InitDmUserCow sends init,<misc>,<cow>,<backing>,<base> and returns the
// device size in sectors. An empty basePath sends the 4-field legacy form
// (Android 12 dm-snapshot mode; the reply is the synthesized store's size),
// as AOSP's client does for an empty base_path_merge.
func (c *Client) InitDmUserCow(misc, cow, backing, basePath string) (uint64, error) {
	fields := []string{"init", misc, cow, backing}
	if basePath != "" {
		fields = append(fields, basePath)
	}
	msg := strings.Join(fields, ",")
	reply, err := c.call(msg)
	if err != nil {
		return 0, err
	}
	rest, ok := strings.CutPrefix(reply, "success,")
	if !ok {
		return 0, fmt.Errorf("snapuserd: init %s: daemon answered %q", misc, reply)
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("snapuserd: init %s: bad sector count in %q", misc, reply)
	}
	return n, nil
}

// AttachDmUser sends start,<misc>.
func (c *Client) AttachDmUser(misc string) error {
	r, err := c.call("start," + misc)
	return expectSuccess("start "+misc, r, err)
}

// WaitForDeviceDelete sends delete,<misc>.
func (c *Client) WaitForDeviceDelete(misc string) error {
	r, err := c.call("delete," + misc)
	return expectSuccess("delete "+misc, r, err)
}

// StopSnapuserd sends stop (no reply expected).
func (c *Client) StopSnapuserd() error { return c.Send("stop") }

// DetachSnapuserd sends detach (no reply expected).
func (c *Client) DetachSnapuserd() error { return c.Send("detach") }

// SupportsSecondStageSocketHandoff probes the capability.
func (c *Client) SupportsSecondStageSocketHandoff() (bool, error) {
	r, err := c.call("supports," + proto.FeatureSocketHandoff)
	if err != nil {
		return false, err
	}
	return r == proto.ReplySuccess, nil
}

// InitiateMerge sends initiate_merge,<misc>.
func (c *Client) InitiateMerge(misc string) error {
	r, err := c.call("initiate_merge," + misc)
	return expectSuccess("initiate_merge "+misc, r, err)
}

// GetMergePercent sends merge_percent; an empty reply counts as 0.
func (c *Client) GetMergePercent() (float64, error) {
	r, err := c.call("merge_percent")
	if err != nil {
		return 0, err
	}
	if r == "" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(r, 64)
	if err != nil {
		return 0, fmt.Errorf("snapuserd: merge_percent: bad reply %q", r)
	}
	return v, nil
}

// QuerySnapshotStatus sends getstatus,<misc>; a failed exchange reports
// snapshot-merge-failed together with the error, as AOSP does.
func (c *Client) QuerySnapshotStatus(misc string) (string, error) {
	r, err := c.call("getstatus," + misc)
	if err != nil {
		return proto.StatusMergeFailed, err
	}
	return r, nil
}

// QueryUpdateVerification sends update-verify.
func (c *Client) QueryUpdateVerification() (bool, error) {
	r, err := c.call("update-verify")
	if err != nil {
		return false, err
	}
	return r == proto.ReplySuccess, nil
}

// PauseMerge sends pause_merge.
func (c *Client) PauseMerge() error {
	r, err := c.call("pause_merge")
	return expectSuccess("pause_merge", r, err)
}

// ResumeMerge sends resume_merge.
func (c *Client) ResumeMerge() error {
	r, err := c.call("resume_merge")
	return expectSuccess("resume_merge", r, err)
}
