// Package config loads the TOML configuration shared by the Trustpool daemons.
//
// A configuration is a pointer to a struct whose fields are sections: nested
// structs tagged with the section name, using oslo's names where one exists
// (`toml:"DEFAULT"`, `toml:"oslo_messaging_rabbit"`, `toml:"keystone_authtoken"`).
// The fields of a section are its keys, again tagged with their oslo names.
//
// [Load] fills such a struct in layers, each overriding the one before:
//
//  1. the defaults already in the struct (the caller sets them before calling Load);
//  2. the TOML file named by [LoadOptions.File];
//  3. environment variables TRUSTPOOL_<SECTION>__<KEY> (section and key upper-cased,
//     a double underscore between them, e.g. TRUSTPOOL_KEYSTONE_AUTHTOKEN__AUTH_URL);
//  4. command-line overrides "section.key=value" ([LoadOptions.Overrides], see [Flags]).
//
// Loading is strict and never fails open: unknown sections, unknown keys (also
// TRUSTPOOL_<SECTION>__<KEY> variables naming a section of this configuration
// but an unknown key) and values that do not parse are errors naming
// section.key, and Load reports all of them at once (joined with
// [errors.Join]) together with the result of the Validate hooks. Callers
// branch on [ErrUnknownKey], [ErrUnknownSection] and [ErrInvalidValue] with
// [errors.Is]; [*FieldError] carries the section, key and source.
//
// [Set] sets one key of a section from its string form, with oslo.config's
// spellings (booleans true/false/yes/no/on/off/1/0, lists as comma-separated
// values). The environment and flag layers use it.
//
// When the file is optional (a daemon started without -config-file reads its
// default path) and missing, Load proceeds from the other layers; if the result
// is not valid, the problems start with one naming that path
// ([ErrDefaultFileMissing]).
//
// The package does not log and does not read files other than the one named.
package config
