package merge_test

import (
	"context"
	"fmt"
	"log"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
	"github.com/vabc-go/vabc/snapuserd/merge"
)

// Offline in-place apply (cowctl apply --in-place): parse the COW, merge it
// into the base image; an interrupted run resumes where it stopped.
func ExampleMergeFiles() {
	r, err := cow.Open("system.cow", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	if err := merge.MergeFiles(context.Background(), "system.cow", "system.img", r, nil); err != nil {
		log.Fatal(err)
	}
}

// Daemon integration: one Engine per partition; the read path serves every
// block through ReadBlock while the merge runs.
func ExampleEngine() {
	r, err := cow.Open("/dev/block/mapper/system_b-cow", nil)
	if err != nil {
		log.Fatal(err)
	}
	cf, _ := faultfs.Open("/dev/block/mapper/system_b-cow")
	base, _ := faultfs.Open("/dev/block/mapper/system_b-base")
	limiter := merge.NewLimiter(merge.DefaultMergeThreads) // shared by all partitions
	e, err := merge.New(cf, base, r, &merge.Options{Limiter: limiter, Nice: merge.BackgroundNice})
	if err != nil {
		log.Fatal(err)
	}
	// initiate_merge
	go func() {
		if err := e.Run(context.Background()); err != nil {
			log.Print(err)
		}
	}()
	// dm-user READ of block 1234
	buf := make([]byte, e.BlockSize())
	if err := e.ReadBlock(1234, buf); err != nil {
		log.Print(err)
	}
	// getstatus / merge_percent / pause_merge / resume_merge
	p := e.Progress()
	fmt.Printf("%s %f\n", p.Status, p.Percent)
	e.Pause()
	e.Resume()
}
