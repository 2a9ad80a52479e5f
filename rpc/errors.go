package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
)

// JSON-RPC 2.0 error codes used by the daemon. The engine may return errors
// carrying their own code (see CodedError); everything else from the engine
// becomes CodeServerError.
const (
	CodeParseError     int64 = -32700 // invalid JSON; the connection is closed after the reply
	CodeInvalidRequest int64 = -32600 // valid JSON but not a JSON-RPC 2.0 request (also: request too large)
	CodeMethodNotFound int64 = -32601
	CodeInvalidParams  int64 = -32602 // the message names the offending field
	CodeInternalError  int64 = -32603 // a bug: a panic in a handler, an unencodable result
	CodeServerError    int64 = -32000 // generic engine error, also "server busy"
)

// CodedError is implemented by engine errors that carry their own JSON-RPC
// error code (for example "model not found").
type CodedError interface {
	error
	RPCCode() int64
}

// DataError is implemented by errors that carry a data member (for example
// the list of schema violations of a plan).
type DataError interface {
	RPCData() any
}

// Error is a JSON-RPC error object. Handlers return it to choose the code;
// the client returns it for error replies.
type Error struct {
	Code    int64           `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s (code %d)", e.Message, e.Code) }

// RPCCode returns the error code.
func (e *Error) RPCCode() int64 { return e.Code }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code int64, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// InvalidParams returns a -32602 error; the message is prefixed with
// "invalid params: ".
func InvalidParams(format string, args ...any) *Error {
	return &Error{Code: CodeInvalidParams, Message: "invalid params: " + fmt.Sprintf(format, args...)}
}

// AsError maps any error to a JSON-RPC error object: an *Error is returned as
// is, an error implementing RPCCode() keeps its code and message (and its
// RPCData(), if any, becomes the data member), anything else becomes
// CodeServerError with the error's message. AsError(nil) is nil.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var re *Error
	if errors.As(err, &re) {
		return re
	}
	out := &Error{Code: CodeServerError, Message: err.Error()}
	var ce CodedError
	if errors.As(err, &ce) {
		out.Code = ce.RPCCode()
		if de, ok := ce.(DataError); ok {
			if d := de.RPCData(); d != nil {
				if b, merr := json.Marshal(d); merr == nil {
					out.Data = b
				}
			}
		}
	}
	if out.Message == "" {
		out.Message = "engine error"
	}
	return out
}
