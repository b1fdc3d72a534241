// The field table: one descriptor per config key, the single place that says what a key is
// called, what it holds, which values it allows and which feature a value would need.
//
// Everything generic works on it: YAML loading and printing (yaml_io.cpp), command-line
// overrides and --help (command_line.cpp), validation (validate.cpp) and the test that
// compares docs/config.md with the program. A descriptor reads and writes its member of
// JobConfig through a FieldValue, a type-independent copy of one key's value.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "titan/config/features.h"
#include "titan/config/job_config.h"

namespace titan::config {

enum class FieldKind { Bool, Int, Float, String, StringList, StringListList, Choice };

// One key's value. std::monostate is "unset" (null), which only optional keys may be.
// A Choice is held by its name.
using FieldValue = std::variant<std::monostate, bool, int64_t, double, std::string, StringList,
                                std::vector<StringList>>;

// The numbers an Int or Float key allows: an interval, plus one sentinel outside it (-1 for
// "the rest" or "all") and one value inside it that is refused (keep_latest_k = 1).
struct Range {
  std::optional<double> lowest;
  bool lowest_open = false;
  std::optional<double> highest;
  bool highest_open = false;
  std::optional<int64_t> also;
  std::optional<int64_t> except;

  bool contains(double value) const;
  std::string describe() const;  // ">= 1 or -1", "[0, 1)", "> 0"; empty when any value goes
};

struct Field {
  std::string name;  // full dotted name: "training.dataloader.num_workers"
  FieldKind kind = FieldKind::String;
  bool optional = false;
  // Choice: the allowed names. StringList: the allowed elements (empty: any string).
  std::vector<std::string> choices;
  Range range;
  // A rule on a String's text that a Range or a choice list cannot say.
  std::function<bool(const std::string&)> text_rule;
  std::string text_rule_description;
  std::string help;
  // Set on the command line only (--config FILE): never read from or printed to YAML,
  // because a printed file that named itself would not load back unchanged.
  bool command_line_only = false;
  // The feature a value of this key switches on, and when it does.
  std::optional<Feature> feature;
  std::function<bool(const FieldValue& value, const FieldValue& default_value)> switches_on;
  std::string feature_off;  // the value(s) that leave it off: "false", "1 or -1", "none"

  std::function<FieldValue(const JobConfig&)> get;
  std::function<void(JobConfig&, const FieldValue&)> set;

  FieldValue default_value() const;
  std::string type_name() const;     // "int", "float?", "list[str]", "choice" ...
  std::string allowed_text() const;  // the choices, the range or the text rule; may be empty

  // Builders for the table.
  Field& at_least(double value);
  Field& above(double value);
  Field& below(double value);
  Field& at_most(double value);
  Field& or_value(int64_t sentinel);
  Field& except(int64_t refused);
  Field& only(std::vector<std::string> names);
  Field& rule(std::function<bool(const std::string&)> check, std::string description);
  Field& needs(Feature needed);  // when the value differs from the default
  Field& needs_above_one(Feature needed);
  Field& needs_unless(Feature needed, FieldValue off_value);
  // Only `on_value` switches the feature on; `off_text` names the values that do not.
  Field& needs_for(Feature needed, FieldValue on_value, std::string off_text);
  // A list whose elements other than `built` switch the feature on.
  Field& needs_beyond(Feature needed, std::vector<std::string> built);
  Field& from_command_line_only();
};

// The table, in the order YAML is printed: sections as in torchtitan, each section's own
// keys before its sub-sections.
const std::vector<Field>& job_config_fields();
const Field* find_field(const std::string& name);
// Every section and sub-section name ("training", "training.dataloader", "quantize.linear").
const std::vector<std::string>& job_config_sections();

// Nearest valid dotted name to a misspelled one, or "" when nothing is close.
std::string nearest_key(const std::string& unknown);

// Value text as the YAML printer writes it (strings quoted) and as docs/config.md shows it
// (plain: ./outputs, [model, loss], null).
std::string format_yaml(const FieldValue& value);
std::string format_plain(const FieldValue& value);
std::string format_float(double value);  // shortest text that reads back to the same double

// Parses one value's text for `field` ("8", "true", "a,b"); never unset, since YAML and the
// command line spell null differently and decide that before calling. Throws
// InputError naming `origin` (the key as the user wrote it) and what is allowed.
FieldValue parse_text(const Field& field, const std::string& text, const std::string& origin);
bool parse_bool(const std::string& text, bool* value);

// Checks a value against the field's type, choices, range and text rule (not features).
// Returns "" when it is fine, else what is wrong, for "<key>: <what>".
std::string check_value(const Field& field, const FieldValue& value);

}  // namespace titan::config
