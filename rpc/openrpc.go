package rpc

import (
	"reflect"

	"github.com/invopop/jsonschema"
)

// OpenRPCVersion is the version of the OpenRPC specification the document
// follows.
const OpenRPCVersion = "1.3.2"

// OpenRPCMetaSchema is the schema of an OpenRPC document (rpc.discover's
// result), as the OpenRPC service discovery convention references it.
const OpenRPCMetaSchema = "https://raw.githubusercontent.com/open-rpc/meta-schema/1.14.2/schema.json"

// Document is an OpenRPC document (https://spec.open-rpc.org).
type Document struct {
	OpenRPC string      `json:"openrpc"`
	Info    DocInfo     `json:"info"`
	Methods []DocMethod `json:"methods"`
}

// DocInfo is the document's info object.
type DocInfo struct {
	Title       string `json:"title"`
	Description string `json:"description,omitempty"`
	Version     string `json:"version"`
}

// DocMethod is an OpenRPC method object. Notifications the daemon sends to
// the caller during the call are listed under the x-notifications extension.
type DocMethod struct {
	Name           string              `json:"name"`
	Summary        string              `json:"summary,omitempty"`
	Description    string              `json:"description,omitempty"`
	ParamStructure string              `json:"paramStructure"`
	Params         []ContentDescriptor `json:"params"`
	Result         *ContentDescriptor  `json:"result"`
	Errors         []DocError          `json:"errors,omitempty"`
	Notifications  []DocNotification   `json:"x-notifications,omitempty"`
	Examples       []Example           `json:"examples,omitempty"`
}

// ContentDescriptor is an OpenRPC content descriptor.
type ContentDescriptor struct {
	Name        string             `json:"name"`
	Summary     string             `json:"summary,omitempty"`
	Description string             `json:"description,omitempty"`
	Required    bool               `json:"required,omitempty"`
	Schema      *jsonschema.Schema `json:"schema"`
}

// DocError is an OpenRPC error object.
type DocError struct {
	Code    int64  `json:"code"`
	Message string `json:"message"`
}

// DocNotification describes a server-to-client notification (extension).
type DocNotification struct {
	Name    string              `json:"name"`
	Summary string              `json:"summary,omitempty"`
	Params  []ContentDescriptor `json:"params"`
}

// NewDocument generates the OpenRPC document from the method table; schemas
// are reflected from the Go types with invopop/jsonschema.
func NewDocument(version string) *Document {
	if version == "" {
		version = "dev"
	}
	doc := &Document{
		OpenRPC: OpenRPCVersion,
		Info: DocInfo{
			Title: "llm-engine",
			Description: "JSON-RPC 2.0 API of llm-engined, served as plain JSON objects on a Unix socket. " +
				"Params are by-name objects; unknown fields are rejected.",
			Version: version,
		},
	}
	t, _ := methodTable()
	for _, m := range t {
		dm := DocMethod{
			Name:           m.Name,
			Summary:        m.Summary,
			Description:    m.Description,
			ParamStructure: "by-name",
			Params:         paramDescriptors(m.Params),
			Examples:       m.Examples,
		}
		rs := m.resultSchema
		if rs == nil {
			rs = reflectSchema(m.Result)
		}
		dm.Result = &ContentDescriptor{Name: resultName(m), Schema: rs}
		if len(dm.Params) > 0 {
			dm.Errors = append(dm.Errors, DocError{Code: CodeInvalidParams, Message: "invalid params: the message names the field"})
		}
		if m.Name != MethodDiscover && m.Name != MethodEngineInfo && m.Name != MethodModelList {
			dm.Errors = append(dm.Errors, DocError{Code: CodeServerError, Message: "engine error (the engine may use its own codes)"})
		}
		for _, n := range m.Notifications {
			dm.Notifications = append(dm.Notifications, DocNotification{
				Name:    n.Name,
				Summary: n.Summary,
				Params:  paramDescriptors(n.Params),
			})
		}
		doc.Methods = append(doc.Methods, dm)
	}
	return doc
}

func resultName(m *Method) string {
	if m.Name == MethodDiscover {
		return "OpenRPC Schema"
	}
	if m.Result.Kind() == reflect.Pointer {
		return m.Result.Elem().Name()
	}
	return m.Result.Name()
}

// paramDescriptors turns the properties of a params struct into one content
// descriptor per by-name param.
func paramDescriptors(t reflect.Type) []ContentDescriptor {
	out := []ContentDescriptor{}
	if t == nil {
		return out
	}
	s := reflectSchema(t)
	if s.Properties == nil {
		return out
	}
	required := map[string]bool{}
	for _, r := range s.Required {
		required[r] = true
	}
	for name, ps := range s.Properties.FromOldest() {
		out = append(out, ContentDescriptor{Name: name, Required: required[name], Schema: ps})
	}
	return out
}
