package ember

import (
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// slogLogger lets raft (which logs through hclog) write to a host's *slog.Logger.
type slogLogger struct {
	l     *slog.Logger
	name  string
	args  []any
	level hclog.Level
}

func newSlogAdapter(l *slog.Logger) hclog.Logger {
	return &slogLogger{l: l, name: "ember", level: hclog.Info}
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (s *slogLogger) Log(level hclog.Level, msg string, args ...any) {
	if level < s.level || level == hclog.Off {
		return
	}
	all := append(append([]any{"logger", s.name}, s.args...), args...)
	s.l.Log(context.Background(), slogLevel(level), msg, all...)
}

func (s *slogLogger) Trace(msg string, args ...any) { s.Log(hclog.Trace, msg, args...) }
func (s *slogLogger) Debug(msg string, args ...any) { s.Log(hclog.Debug, msg, args...) }
func (s *slogLogger) Info(msg string, args ...any)  { s.Log(hclog.Info, msg, args...) }
func (s *slogLogger) Warn(msg string, args ...any)  { s.Log(hclog.Warn, msg, args...) }
func (s *slogLogger) Error(msg string, args ...any) { s.Log(hclog.Error, msg, args...) }
func (s *slogLogger) IsTrace() bool                 { return s.level <= hclog.Trace }
func (s *slogLogger) IsDebug() bool                 { return s.level <= hclog.Debug }
func (s *slogLogger) IsInfo() bool                  { return s.level <= hclog.Info }
func (s *slogLogger) IsWarn() bool                  { return s.level <= hclog.Warn }
func (s *slogLogger) IsError() bool                 { return s.level <= hclog.Error }
func (s *slogLogger) ImpliedArgs() []any            { return s.args }
func (s *slogLogger) Name() string                  { return s.name }
func (s *slogLogger) SetLevel(l hclog.Level)        { s.level = l }
func (s *slogLogger) GetLevel() hclog.Level         { return s.level }

func (s *slogLogger) With(args ...any) hclog.Logger {
	c := *s
	c.args = append(append([]any(nil), s.args...), args...)
	return &c
}

func (s *slogLogger) Named(name string) hclog.Logger {
	c := *s
	c.name = s.name + "." + name
	return &c
}

func (s *slogLogger) ResetNamed(name string) hclog.Logger {
	c := *s
	c.name = name
	return &c
}

func (s *slogLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(s.StandardWriter(opts), "", 0)
}

func (s *slogLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		s.Info(string(p))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
