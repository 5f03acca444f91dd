package manifest

import (
	"fmt"
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// toErrors turns a validation ErrorList into *Error values for one object.
func toErrors(file, object string, list field.ErrorList) []error {
	out := make([]error, 0, len(list))
	for _, fe := range list {
		out = append(out, &Error{File: file, Object: object, Field: fe.Field, Reason: reason(fe)})
	}
	return out
}

// reason renders a field error as a sentence without repeating the field
// path, which Error already carries.
func reason(fe *field.Error) string {
	switch fe.Type {
	case field.ErrorTypeRequired:
		if fe.Detail != "" {
			return fe.Detail
		}
		return "is required"
	case field.ErrorTypeDuplicate:
		return fmt.Sprintf("duplicate value %s", quote(fe.BadValue))
	case field.ErrorTypeNotSupported:
		return fmt.Sprintf("unsupported value %s: %s", quote(fe.BadValue), fe.Detail)
	case field.ErrorTypeInvalid:
		// The apimachinery helpers describe the rule but not the value; add
		// the value so the user sees what was read.
		if s, ok := fe.BadValue.(string); ok && s != "" &&
			!strings.Contains(fe.Detail, `"`+s+`"`) && !strings.Contains(fe.Detail, "'"+s+"'") {
			return fmt.Sprintf("%q: %s", s, fe.Detail)
		}
		return fe.Detail
	case field.ErrorTypeForbidden:
		return fe.Detail
	default:
		return fe.ErrorBody()
	}
}

func quote(v any) string {
	if v != nil && reflect.TypeOf(v).Kind() == reflect.String {
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprintf("%v", v)
}

// invalidMsgs adds one Invalid error per message from an apimachinery
// validation helper.
func invalidMsgs(path *field.Path, value string, msgs []string) field.ErrorList {
	var errs field.ErrorList
	for _, m := range msgs {
		errs = append(errs, field.Invalid(path, value, m))
	}
	return errs
}

// nonNegative reports a negative integer field.
func nonNegative[T ~int32 | ~int64](path *field.Path, v T) field.ErrorList {
	if v < 0 {
		return field.ErrorList{field.Invalid(path, v, "must be greater than or equal to 0")}
	}
	return nil
}
