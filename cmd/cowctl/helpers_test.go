package main

import (
	"context"
	"io"
)

type (
	contextT = context.Context
	ioWriter = io.Writer
)
