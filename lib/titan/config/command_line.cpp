// Command-line overrides, spelled as torchtitan's tyro CLI spells them:
//   --section.key VALUE  or  --section.key=VALUE; `-` and `_` interchangeable in names;
//   booleans as switches (--checkpoint.enable, --checkpoint.no_enable) or with a value
//   (--checkpoint.enable false); lists as one comma-separated argument (a,b); null or None
//   for an unset optional key.
// A first pass turns each option into the canonical `--<name>=<value>` (that is where tyro's
// spellings differ from Boost's: switches with optional values, negative numbers as values,
// `no_` forms); Boost.Program_options then parses those tokens against options generated
// from the field table, which also gives --help its text.
#include <boost/program_options.hpp>

#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "titan/config/fields.h"
#include "titan/config/load.h"
#include "titan/core/error.h"

namespace titan::config {
namespace {

namespace po = boost::program_options;

// Options of the program itself, beside the config keys.
struct AppOption {
  const char* name;
  const char* help;
  bool takes_value;
};
constexpr AppOption kAppOptions[] = {
    {"config", "YAML job config to load (same as --job.config_file)", true},
    {"print-config", "print the merged config as YAML on stdout and exit", false},
    {"version", "print the version and the build (backends, BLAS, threads) and exit", false},
    {"help", "print this help and exit", false},
};

std::string canonical(std::string name) {
  for (char& ch : name) {
    if (ch == '-') ch = '_';
  }
  return name;
}

const AppOption* find_app_option(const std::string& canonical_name) {
  for (const AppOption& option : kAppOptions) {
    if (canonical(option.name) == canonical_name) return &option;
  }
  return nullptr;
}

std::string field_description(const Field& field) {
  std::string text = field.help + " [" + field.type_name() +
                     "; default: " + format_plain(field.default_value());
  if (const std::string allowed = field.allowed_text(); !allowed.empty()) {
    text += "; allowed: " + allowed;
  }
  if (field.feature && !feature_info(*field.feature).built) {
    const FeatureInfo& missing = feature_info(*field.feature);
    text += "; other than " + field.feature_off + " needs " + missing.name +
            (missing.missing_from_build.empty() ? ", not built yet" : ", not in this build");
  }
  return text + "]";
}

// Boost prints each group at its own width, so every group gets the same one.
constexpr unsigned kHelpWidth = 110, kHelpDescriptionWidth = 50;

po::options_description describe_options() {
  po::options_description all("titan-train options", kHelpWidth, kHelpDescriptionWidth);
  po::options_description general("general", kHelpWidth, kHelpDescriptionWidth);
  for (const AppOption& option : kAppOptions) {
    if (option.takes_value) {
      general.add_options()(option.name,
                            po::value<std::vector<std::string>>()->value_name("FILE"),
                            option.help);
    } else {
      general.add_options()(option.name, option.help);
    }
  }
  all.add(general);
  // One group per top-level section, in table order.
  std::map<std::string, po::options_description> groups;
  std::vector<std::string> order;
  for (const Field& field : job_config_fields()) {
    const std::string section = field.name.substr(0, field.name.find('.'));
    if (!groups.count(section)) {
      groups.emplace(section,
                     po::options_description(section, kHelpWidth, kHelpDescriptionWidth));
      order.push_back(section);
    }
    groups.at(section).add_options()(
        field.name.c_str(), po::value<std::vector<std::string>>()->value_name("VALUE"),
        field_description(field).c_str());
  }
  for (const std::string& section : order) all.add(groups.at(section));
  return all;
}

std::string unknown_option_message(const std::string& shown, const std::string& name) {
  std::string message;
  const size_t dot = name.rfind('.');
  bool known_section = false;
  for (const std::string& section : job_config_sections()) {
    known_section = known_section || (dot != std::string::npos && section == name.substr(0, dot));
  }
  if (dot != std::string::npos && !known_section) {
    message = "unknown section " + name.substr(0, name.find('.')) + " in " + shown;
  } else {
    message = "unknown option " + shown;
  }
  const std::string nearest = nearest_key(name);
  return message + (nearest.empty() ? " (titan-train --help lists every option)"
                                    : "; did you mean " + nearest + "?");
}

struct Normalized {
  Action action = Action::Train;
  std::vector<std::string> tokens;  // --<name>=<value>

  void add(const std::string& name, const std::string& value) {
    // Boost refuses "--name=" (nothing after the sign), yet an empty list is a fair value:
    // that one goes as a separate token, which Boost takes as the value.
    if (value.empty()) {
      tokens.push_back("--" + name);
      tokens.push_back(value);
    } else {
      tokens.push_back("--" + name + "=" + value);
    }
  }
};

Normalized normalize(const std::vector<std::string>& arguments) {
  Normalized out;
  bool print_config = false;
  for (size_t i = 0; i < arguments.size(); ++i) {
    const std::string& token = arguments[i];
    TITAN_CHECK_INPUT(token.size() > 2 && token.compare(0, 2, "--") == 0)
        << "unexpected argument '" << token
        << "'; options look like --section.key VALUE (titan-train --help lists them)";
    const std::string body = token.substr(2);
    const size_t equals = body.find('=');
    const bool has_value = equals != std::string::npos;
    const std::string shown = "--" + body.substr(0, equals);
    const std::string name = canonical(body.substr(0, equals));
    std::string value = has_value ? body.substr(equals + 1) : "";
    auto next_value = [&](const std::string& what) {
      TITAN_CHECK_INPUT(i + 1 < arguments.size()) << shown << " needs a value (" << what << ")";
      return arguments[++i];
    };

    if (const AppOption* option = find_app_option(name)) {
      if (option->takes_value) {
        out.add(option->name, has_value ? value : next_value("a file"));
        continue;
      }
      TITAN_CHECK_INPUT(!has_value) << shown << " takes no value";
      if (name == "print_config") print_config = true;  // help and version returned earlier
      continue;
    }
    const Field* field = find_field(name);
    if (field == nullptr) {
      // --section.no_key switches a boolean key off.
      const size_t dot = name.rfind('.');
      const std::string last = name.substr(dot == std::string::npos ? 0 : dot + 1);
      if (dot != std::string::npos && last.compare(0, 3, "no_") == 0) {
        const Field* negated = find_field(name.substr(0, dot + 1) + last.substr(3));
        if (negated != nullptr && negated->kind == FieldKind::Bool) {
          TITAN_CHECK_INPUT(!has_value) << shown << " is a switch and takes no value";
          out.add(negated->name, "false");
          continue;
        }
      }
      TITAN_FAIL_INPUT() << unknown_option_message(shown, name);
    }
    if (!has_value) {
      bool ignored = false;
      if (field->kind != FieldKind::Bool) {
        value = next_value(field->type_name());
      } else if (i + 1 < arguments.size() && parse_bool(arguments[i + 1], &ignored)) {
        value = arguments[++i];
      } else {
        value = "true";  // a bare switch
      }
    }
    out.add(field->name, value);
  }
  if (print_config) out.action = Action::PrintConfig;
  return out;
}

FieldValue parse_override(const Field& field, const std::string& text) {
  // tyro spells "unset" None; YAML spells it null. Both work here.
  if (field.optional && (text == "null" || text == "None")) return {};
  return parse_text(field, text, "--" + field.name);
}

}  // namespace

std::string command_line_help() {
  std::ostringstream out;
  out << "usage: titan-train [--config FILE] [--print-config] [--<section>.<key> VALUE ...]\n"
         "\n"
         "Trains a language model. Values come from the defaults, then the YAML file, then\n"
         "the command line (last wins). `--k v` and `--k=v` both work; `-` and `_` are the\n"
         "same in names. Booleans: --section.key, --section.no_key, or --section.key false.\n"
         "Lists: one comma-separated argument (a,b). Optional keys: null or None unsets.\n"
         "docs/config.md describes every key.\n\n"
      << describe_options();
  return out.str();
}

CommandLine parse_command_line(const std::vector<std::string>& arguments) {
  // --help and --version answer whatever else the line holds, even a misspelled key.
  for (const std::string& token : arguments) {
    if (token == "--help" || token == "-h") return {Action::ShowHelp, {}};
  }
  for (const std::string& token : arguments) {
    if (token == "--version") return {Action::ShowVersion, {}};
  }
  const Normalized normalized = normalize(arguments);
  CommandLine result;
  result.action = normalized.action;

  po::variables_map options;
  try {
    const po::options_description description = describe_options();
    po::store(po::command_line_parser(normalized.tokens)
                  .options(description)
                  .style(po::command_line_style::default_style &
                         ~po::command_line_style::allow_guessing)
                  .run(),
              options);
  } catch (const po::error& error) {
    TITAN_FAIL_INPUT() << error.what();
  }
  auto last = [&](const std::string& name) {
    return options[name].as<std::vector<std::string>>().back();
  };

  // The file first, whichever spelling named it; then every override over it.
  std::optional<std::string> file;
  if (options.count("config")) file = last("config");
  if (options.count("job.config_file")) {
    const std::string named = last("job.config_file");
    TITAN_CHECK_INPUT(!file || *file == named)
        << "--config " << *file << " and --job.config_file " << named << " name different files";
    file = named;
  }
  KeyOrigins origins;
  if (file) {
    apply_yaml_file(result.config, *file, &origins);
    result.config.job.config_file = *file;
  }
  for (const Field& field : job_config_fields()) {
    if (field.command_line_only || !options.count(field.name)) continue;
    field.set(result.config, parse_override(field, last(field.name)));
    origins[field.name] = "--" + field.name;
    result.config.given_keys.insert(field.name);
  }
  validate(result.config, &origins);
  return result;
}

CommandLine parse_command_line(int argc, const char* const argv[]) {
  std::vector<std::string> arguments;
  for (int i = 1; i < argc; ++i) arguments.emplace_back(argv[i]);
  return parse_command_line(arguments);
}

}  // namespace titan::config
