package redistest

import "syscall"

// PID returns the redis-server's process id (0 when it is not running).
func (s *Server) PID() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop freezes the server with SIGSTOP: its port still accepts connections (the kernel's
// backlog), but nothing answers — a hung Redis, unlike Kill's crash. Cont resumes it; Kill
// and Restart resume it first.
func (s *Server) Stop() { s.signal(syscall.SIGSTOP) }

// Cont resumes a server frozen by Stop (SIGCONT).
func (s *Server) Cont() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		s.t.Fatalf("redis-server is not running: cannot send %v", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("sending %v to redis-server: %v", sig, err)
	}
}
