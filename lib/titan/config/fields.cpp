// The generic half of the field table: ranges, value text, parsing and checking. The rows
// themselves are in field_table.cpp.
#include "titan/config/fields.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

#include "titan/core/error.h"

namespace titan::config {
namespace {

std::string number_text(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.15g", value);
  return text;
}

std::string join(const std::vector<std::string>& parts, const std::string& separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += separator;
    out += parts[i];
  }
  return out;
}

// Appending rather than "[" + text keeps g++ 12 from a false -Wrestrict warning.
std::string bracketed(const std::vector<std::string>& parts) {
  std::string out = "[";
  out += join(parts, ", ");
  out += "]";
  return out;
}

std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (const char ch : text) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          char escape[8];
          std::snprintf(escape, sizeof escape, "\\x%02x", unsigned(static_cast<unsigned char>(ch)));
          out += escape;
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::string trim(const std::string& text) {
  const size_t first = text.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

StringList split_list(const std::string& text, char separator) {
  StringList items;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, separator)) {
    item = trim(item);
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

size_t levenshtein(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string last_component(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

}  // namespace

// --- Range ----------------------------------------------------------------------------

bool Range::contains(double value) const {
  if (also && value == double(*also)) return true;
  if (except && value == double(*except)) return false;
  if (lowest && (lowest_open ? value <= *lowest : value < *lowest)) return false;
  if (highest && (highest_open ? value >= *highest : value > *highest)) return false;
  return true;
}

std::string Range::describe() const {
  std::string text;
  if (lowest && highest) {
    text = std::string("in ") + (lowest_open ? "(" : "[") + number_text(*lowest) + ", " +
           number_text(*highest) + (highest_open ? ")" : "]");
  } else if (lowest) {
    text = (lowest_open ? "> " : ">= ") + number_text(*lowest);
  } else if (highest) {
    text = (highest_open ? "< " : "<= ") + number_text(*highest);
  }
  if (except) text += " and not " + std::to_string(*except);
  if (also) text += " or " + std::to_string(*also);
  return text;
}

// --- Field ----------------------------------------------------------------------------

FieldValue Field::default_value() const { return get(JobConfig{}); }

std::string Field::type_name() const {
  static const char* const names[] = {"bool", "int", "float", "str",
                                      "list[str]", "list[list[str]]", "choice"};
  return std::string(names[int(kind)]) + (optional ? "?" : "");
}

std::string Field::allowed_text() const {
  if (kind == FieldKind::Choice) return join(choices, ", ");
  if (kind == FieldKind::StringList && !choices.empty()) return "each of " + join(choices, ", ");
  if (kind == FieldKind::Int || kind == FieldKind::Float) return range.describe();
  return text_rule_description;
}

Field& Field::at_least(double value) {
  range.lowest = value;
  range.lowest_open = false;
  return *this;
}
Field& Field::above(double value) {
  range.lowest = value;
  range.lowest_open = true;
  return *this;
}
Field& Field::below(double value) {
  range.highest = value;
  range.highest_open = true;
  return *this;
}
Field& Field::at_most(double value) {
  range.highest = value;
  range.highest_open = false;
  return *this;
}
Field& Field::or_value(int64_t sentinel) { range.also = sentinel; return *this; }
Field& Field::except(int64_t refused) { range.except = refused; return *this; }
Field& Field::only(std::vector<std::string> names) { choices = std::move(names); return *this; }
Field& Field::from_command_line_only() { command_line_only = true; return *this; }

Field& Field::rule(std::function<bool(const std::string&)> check, std::string description) {
  text_rule = std::move(check);
  text_rule_description = std::move(description);
  return *this;
}

Field& Field::needs(Feature needed) {
  feature = needed;
  feature_off = format_plain(default_value());
  switches_on = [](const FieldValue& value, const FieldValue& def) { return value != def; };
  return *this;
}

Field& Field::needs_beyond(Feature needed, std::vector<std::string> built) {
  feature = needed;
  feature_off = "[]";
  for (const std::string& name : built) feature_off += " or [" + name + "]";
  switches_on = [built = std::move(built)](const FieldValue& value, const FieldValue&) {
    const auto* names = std::get_if<StringList>(&value);
    if (names == nullptr) return false;
    for (const std::string& name : *names) {
      if (std::find(built.begin(), built.end(), name) == built.end()) return true;
    }
    return false;
  };
  return *this;
}

// Call after the range's or_value(), so the off values name the sentinel too.
Field& Field::needs_above_one(Feature needed) {
  feature = needed;
  feature_off = range.also ? "1 or " + std::to_string(*range.also) : "1";
  switches_on = [](const FieldValue& value, const FieldValue&) {
    return std::holds_alternative<int64_t>(value) && std::get<int64_t>(value) > 1;
  };
  return *this;
}

Field& Field::needs_unless(Feature needed, FieldValue off_value) {
  feature = needed;
  feature_off = format_plain(off_value);
  switches_on = [off = std::move(off_value)](const FieldValue& value, const FieldValue&) {
    return value != off;
  };
  return *this;
}

Field& Field::needs_for(Feature needed, FieldValue on_value, std::string off_text) {
  feature = needed;
  feature_off = std::move(off_text);
  switches_on = [on = std::move(on_value)](const FieldValue& value, const FieldValue&) {
    return value == on;
  };
  return *this;
}

// --- lookup ---------------------------------------------------------------------------

const Field* find_field(const std::string& name) {
  for (const Field& field : job_config_fields()) {
    if (field.name == name) return &field;
  }
  return nullptr;
}

const std::vector<std::string>& job_config_sections() {
  static const std::vector<std::string> sections = [] {
    std::vector<std::string> names;
    std::set<std::string> seen;
    for (const Field& field : job_config_fields()) {
      for (size_t dot = field.name.find('.'); dot != std::string::npos;
           dot = field.name.find('.', dot + 1)) {
        const std::string prefix = field.name.substr(0, dot);
        if (seen.insert(prefix).second) names.push_back(prefix);
      }
    }
    return names;
  }();
  return sections;
}

std::string nearest_key(const std::string& unknown) {
  std::string best;
  size_t best_distance = std::string::npos;
  auto consider = [&](const std::string& candidate, size_t distance) {
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  };
  const bool dotted = unknown.find('.') != std::string::npos;
  for (const Field& field : job_config_fields()) {
    consider(field.name, levenshtein(unknown, field.name));
    // "--steps" means training.steps more likely than anything one edit away.
    if (!dotted) consider(field.name, levenshtein(unknown, last_component(field.name)) + 1);
  }
  for (const std::string& section : job_config_sections()) {
    consider(section, levenshtein(unknown, section));
  }
  const size_t tolerance = std::max<size_t>(2, unknown.size() / 3);
  return best_distance <= tolerance ? best : "";
}

// --- value text -----------------------------------------------------------------------

std::string format_float(double value) {
  if (std::isnan(value)) return ".nan";
  if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
  char text[40];
  int digits = 1;
  for (; digits < 17; ++digits) {
    std::snprintf(text, sizeof text, "%.*g", digits, value);
    if (std::strtod(text, nullptr) == value) break;
  }
  // %g turns to an exponent once the exponent reaches the digit count (5e+05); write whole
  // numbers below 1e16 out in full instead, as a person would.
  const int exponent = value == 0 ? 0 : int(std::floor(std::log10(std::fabs(value))));
  if (exponent >= digits && exponent < 16) digits = exponent + 1;
  std::snprintf(text, sizeof text, "%.*g", digits, value);
  std::string out = text;
  // "1e-08" -> "1e-8": the exponent's padding is noise.
  if (const size_t e = out.find('e'); e != std::string::npos) {
    std::string mantissa = out.substr(0, e), exponent = out.substr(e + 1);
    std::string sign;
    if (exponent[0] == '-' || exponent[0] == '+') {
      if (exponent[0] == '-') sign = "-";
      exponent = exponent.substr(1);
    }
    exponent.erase(0, std::min(exponent.find_first_not_of('0'), exponent.size() - 1));
    return mantissa + "e" + sign + exponent;
  }
  if (out.find('.') == std::string::npos) out += ".0";  // reads as a float, not an int
  return out;
}

namespace {

template <bool yaml>
std::string format_value(const FieldValue& value) {
  auto text = [](const std::string& item) {
    if constexpr (yaml) return quoted(item);
    return item.empty() ? std::string("\"\"") : item;
  };
  auto list = [&](const StringList& items) {
    std::vector<std::string> parts;
    for (const std::string& item : items) parts.push_back(text(item));
    return bracketed(parts);
  };
  struct Visitor {
    decltype(text)& text_of;
    decltype(list)& list_of;
    std::string operator()(std::monostate) const { return "null"; }
    std::string operator()(bool v) const { return v ? "true" : "false"; }
    std::string operator()(int64_t v) const { return std::to_string(v); }
    std::string operator()(double v) const { return format_float(v); }
    std::string operator()(const std::string& v) const { return text_of(v); }
    std::string operator()(const StringList& v) const { return list_of(v); }
    std::string operator()(const std::vector<StringList>& v) const {
      std::vector<std::string> parts;
      for (const StringList& items : v) parts.push_back(list_of(items));
      return bracketed(parts);
    }
  };
  return std::visit(Visitor{text, list}, value);
}

}  // namespace

std::string format_yaml(const FieldValue& value) { return format_value<true>(value); }
std::string format_plain(const FieldValue& value) { return format_value<false>(value); }

// --- parsing --------------------------------------------------------------------------

bool parse_bool(const std::string& text, bool* value) {
  std::string lower = text;
  for (char& ch : lower) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if (lower == "true" || lower == "yes" || lower == "on" || lower == "1") {
    *value = true;
    return true;
  }
  if (lower == "false" || lower == "no" || lower == "off" || lower == "0") {
    *value = false;
    return true;
  }
  return false;
}

FieldValue parse_text(const Field& field, const std::string& text, const std::string& origin) {
  const std::string shown = "'" + text + "'";
  switch (field.kind) {
    case FieldKind::Bool: {
      bool value = false;
      TITAN_CHECK_INPUT(parse_bool(text, &value))
          << origin << ": expected true or false, got " << shown;
      return value;
    }
    case FieldKind::Int: {
      errno = 0;
      char* end = nullptr;
      const long long value = std::strtoll(text.c_str(), &end, 10);
      TITAN_CHECK_INPUT(!text.empty() && *end == '\0' && errno == 0)
          << origin << ": expected an integer, got " << shown;
      return int64_t(value);
    }
    case FieldKind::Float: {
      errno = 0;
      char* end = nullptr;
      const double value = std::strtod(text.c_str(), &end);
      TITAN_CHECK_INPUT(!text.empty() && *end == '\0' && errno == 0 && std::isfinite(value))
          << origin << ": expected a number, got " << shown;
      return value;
    }
    case FieldKind::String:
      return text;
    case FieldKind::StringList:
      return split_list(text, ',');
    case FieldKind::StringListList: {
      std::vector<StringList> lists;
      for (const std::string& part : split_list(text, ';')) lists.push_back(split_list(part, ','));
      return lists;
    }
    case FieldKind::Choice:
      TITAN_CHECK_INPUT(std::find(field.choices.begin(), field.choices.end(), text) !=
                        field.choices.end())
          << origin << ": " << shown << " is not one of " << join(field.choices, ", ");
      return text;
  }
  TITAN_FAIL() << "unhandled field kind";
}

std::string check_value(const Field& field, const FieldValue& value) {
  if (std::holds_alternative<std::monostate>(value)) {
    return field.optional ? "" : "must be set (null is allowed only for optional keys)";
  }
  const std::string allowed = field.allowed_text();
  switch (field.kind) {
    case FieldKind::Int:
    case FieldKind::Float: {
      const double number = field.kind == FieldKind::Int ? double(std::get<int64_t>(value))
                                                         : std::get<double>(value);
      if (field.range.contains(number)) return "";
      return format_plain(value) + " is out of range; allowed: " + allowed;
    }
    case FieldKind::Choice: {
      const std::string& name = std::get<std::string>(value);
      if (std::find(field.choices.begin(), field.choices.end(), name) != field.choices.end()) {
        return "";
      }
      return "'" + name + "' is not one of " + allowed;
    }
    case FieldKind::StringList:
      if (field.choices.empty()) return "";
      for (const std::string& item : std::get<StringList>(value)) {
        if (std::find(field.choices.begin(), field.choices.end(), item) == field.choices.end()) {
          return "'" + item + "' is not one of " + join(field.choices, ", ");
        }
      }
      return "";
    case FieldKind::String:
      if (!field.text_rule || field.text_rule(std::get<std::string>(value))) return "";
      return "'" + std::get<std::string>(value) + "' is not allowed; allowed: " + allowed;
    case FieldKind::Bool:
    case FieldKind::StringListList:
      return "";
  }
  return "";
}

}  // namespace titan::config
