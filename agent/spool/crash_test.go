package spool_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/spool"
)

const crashDirEnv = "EDGEFLEET_SPOOL_CRASH_DIR"

// TestCrashHelper is the child process of TestKill9: it appends (and now and then acks) in a loop
// and prints each sequence number only after Append (or Ack) has returned, i.e. after the fsynced
// commit. The parent kills it with SIGKILL at a random instant.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("child process of TestKill9")
	}
	s, err := spool.Open(dir, spool.Options{})
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(2)
	}
	r := rand.New(rand.NewPCG(uint64(os.Getpid()), 1))
	for i := 0; ; i++ {
		seq, err := s.Append("hist", make([]byte, 10+r.IntN(3000)), time.Now(), time.Now())
		if err != nil {
			fmt.Printf("error %v\n", err)
			os.Exit(2)
		}
		fmt.Printf("a %d\n", seq)
		if i%7 == 6 {
			if err := s.Ack(seq - 3); err != nil {
				fmt.Printf("error %v\n", err)
				os.Exit(2)
			}
			fmt.Printf("k %d\n", seq-3)
		}
	}
}

func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(7, 7))
	var issued []uint64 // every seq a child reported, across all runs
	var maxAck uint64
	for run := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Kill after a random number of reported appends (the kill lands wherever the child is
		// then: mid-transaction, mid-fsync, mid-print).
		killAfter := 20 + r.IntN(300)
		var runIssued []uint64
		var killed bool
		for line := range lines {
			f := strings.Fields(line)
			if len(f) != 2 || (f[0] != "a" && f[0] != "k") {
				if strings.HasPrefix(line, "error") {
					t.Fatalf("run %d child: %s", run, line)
				}
				continue
			}
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				continue // a line cut by the kill
			}
			if f[0] == "k" {
				maxAck = max(maxAck, n)
			} else {
				runIssued = append(runIssued, n)
			}
			if !killed && len(runIssued) >= killAfter {
				// Let it run on a random moment more so the kill does not always follow a print.
				time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		cmd.Wait()
		issued = append(issued, runIssued...)

		s, err := spool.Open(dir, spool.Options{})
		if err != nil {
			t.Fatalf("run %d: reopen after kill -9: %v", run, err)
		}
		st := s.Stats()
		es, err := s.Pending(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		present := map[uint64]bool{}
		for _, e := range es {
			if e.LastSeq <= maxAck {
				t.Errorf("run %d: seq %d was acknowledged (%d) and reappeared", run, e.FirstSeq, maxAck)
			}
			present[e.FirstSeq] = true
		}
		if st.LastAck < maxAck {
			t.Errorf("run %d: LastAck %d below the acknowledged %d", run, st.LastAck, maxAck)
		}
		for _, q := range runIssued {
			if q > st.LastAck && !present[q] {
				t.Errorf("run %d: seq %d was appended (fsynced) and is lost", run, q)
			}
		}
		// Sequence numbers never repeat: across runs every reported one is new and increasing.
		for i := 1; i < len(issued); i++ {
			if issued[i] <= issued[i-1] {
				t.Fatalf("run %d: seq %d issued after %d", run, issued[i], issued[i-1])
			}
		}
		if len(issued) > 0 && st.NextSeq <= issued[len(issued)-1] {
			t.Errorf("run %d: next seq %d would reuse %d", run, st.NextSeq, issued[len(issued)-1])
		}
		t.Logf("run %d: killed after %d appends; reopened with %d pending, last ack %d, next seq %d",
			run, len(runIssued), st.Pending, st.LastAck, st.NextSeq)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
