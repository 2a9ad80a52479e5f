package engine

import "fmt"

// JSON-RPC error codes of engine failures. The JSON-RPC reserved range
// (-32768..-32000) is left to the protocol layer; ours are documented in
// rpc/README.md and stable.
const (
	CodeInvalidParams  int64 = -32602 // a request field is wrong (protocol code)
	CodeModelNotFound  int64 = -32010 // model id unknown, or path does not exist
	CodeModelInvalid   int64 = -32011 // the file is not a usable model (corrupt GGUF, unsupported arch/type)
	CodeContextFull    int64 = -32012 // prompt + max_tokens exceed the context
	CodeBusy           int64 = -32013 // queue full: retry later
	CodeCancelled      int64 = -32014 // the run was cancelled before it produced a result
	CodeInternal       int64 = -32603
	CodePlanInvalid    int64 = -32020 // plan failed schema or semantic validation
	CodePlanNotFound   int64 = -32021
	CodeRunNotFound    int64 = -32022 // run id unknown (or pruned by the record retention)
	CodeUnauthorized   int64 = -32030 // peer not allowed to call a mutating method
	CodeNotImplemented int64 = -32040
)

// Error is an engine failure with a JSON-RPC code. Data, when set, is sent as
// the error's data member (for example the list of schema violations).
type Error struct {
	Code int64
	Msg  string
	Data any
}

func (e *Error) Error() string { return e.Msg }

// RPCCode lets the rpc layer map the error to its JSON-RPC code.
func (e *Error) RPCCode() int64 { return e.Code }

// RPCData is the error's data member.
func (e *Error) RPCData() any { return e.Data }

func errorf(code int64, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}
