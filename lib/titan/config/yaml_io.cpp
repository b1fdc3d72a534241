// YAML in and out. Sections are nested mappings (`training: {dataloader: {num_workers: 0}}`),
// as torchtitan's TOML tables were. The printer is ours rather than yaml-cpp's emitter so
// that its bytes are fixed: strings always double-quoted, floats in their shortest exact
// form, keys in table order.
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>
#include <sstream>

#include "titan/config/fields.h"
#include "titan/config/load.h"
#include "titan/core/error.h"

namespace titan::config {
namespace {

std::string where(const std::string& origin, const YAML::Mark& mark) {
  // yaml-cpp counts from 0; editors count from 1.
  return origin + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

bool is_section(const std::string& name) {
  for (const std::string& section : job_config_sections()) {
    if (section == name) return true;
  }
  return false;
}

std::string suggestion(const std::string& name) {
  const std::string nearest = nearest_key(name);
  return nearest.empty() ? " (docs/config.md lists every key)" : "; did you mean " + nearest + "?";
}

FieldValue read_value(const Field& field, const YAML::Node& node, const std::string& origin) {
  if (node.IsNull()) {
    TITAN_CHECK_INPUT(field.optional)
        << origin << ": null is allowed only for optional keys; expected " << field.type_name();
    return {};
  }
  auto scalars = [&](const YAML::Node& sequence) {
    TITAN_CHECK_INPUT(sequence.IsSequence())
        << origin << ": expected a list such as [a, b], got "
        << (sequence.IsMap() ? "a mapping" : "'" + sequence.Scalar() + "'");
    StringList items;
    for (const YAML::Node& item : sequence) {
      TITAN_CHECK_INPUT(item.IsScalar()) << origin << ": list items must be strings";
      items.push_back(item.Scalar());
    }
    return items;
  };
  switch (field.kind) {
    case FieldKind::StringList:
      return scalars(node);
    case FieldKind::StringListList: {
      TITAN_CHECK_INPUT(node.IsSequence())
          << origin << ": expected a list of lists such as [[a, b], [c]]";
      std::vector<StringList> lists;
      for (const YAML::Node& item : node) lists.push_back(scalars(item));
      return lists;
    }
    default: {
      TITAN_CHECK_INPUT(node.IsScalar())
          << origin << ": expected " << field.type_name() << ", got a "
          << (node.IsMap() ? "mapping" : "list");
      // Only YAML's own null (handled above) is unset; a string "None" is a string.
      return parse_text(field, node.Scalar(), origin);
    }
  }
}

void apply_mapping(JobConfig& config, const YAML::Node& mapping, const std::string& prefix,
                   const std::string& origin, std::set<std::string>& seen, KeyOrigins* origins) {
  for (const auto& entry : mapping) {  // a proxy: copy the nodes (handles) out of it
    const YAML::Node key = entry.first;
    const YAML::Node value = entry.second;
    TITAN_CHECK_INPUT(key.IsScalar()) << where(origin, key.Mark()) << ": keys must be names";
    const std::string name = prefix.empty() ? key.Scalar() : prefix + "." + key.Scalar();
    const std::string at = where(origin, key.Mark());
    TITAN_CHECK_INPUT(seen.insert(name).second) << at << ": " << name << " is set twice";
    if (const Field* field = find_field(name)) {
      TITAN_CHECK_INPUT(!field->command_line_only)
          << at << ": " << name << " names the file to load; give it on the command line "
          << "(--config FILE), not inside a config file";
      // A value's own position where it has one; an empty value (null) has only its key's.
      const std::string value_at = value.IsNull() ? at : where(origin, value.Mark());
      field->set(config, read_value(*field, value, value_at + ": " + name));
      config.given_keys.insert(name);
      if (origins != nullptr) (*origins)[name] = at + ": " + name;
    } else if (is_section(name)) {
      TITAN_CHECK_INPUT(value.IsMap() || value.IsNull())
          << at << ": " << name << " is a section; expected a mapping of its keys";
      if (value.IsMap()) apply_mapping(config, value, name, origin, seen, origins);
    } else {
      TITAN_FAIL_INPUT() << at << ": unknown " << (prefix.empty() ? "section " : "key ") << name
                         << suggestion(name);
    }
  }
}

}  // namespace

void apply_yaml_text(JobConfig& config, const std::string& text, const std::string& origin,
                     KeyOrigins* origins) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& error) {
    TITAN_FAIL_INPUT() << where(origin, error.mark) << ": malformed YAML: " << error.msg;
  }
  if (root.IsNull()) return;  // an empty file keeps every default
  TITAN_CHECK_INPUT(root.IsMap())
      << where(origin, root.Mark()) << ": expected a mapping of sections (job:, training:, ...)";
  std::set<std::string> seen;
  try {
    apply_mapping(config, root, "", origin, seen, origins);
  } catch (const YAML::Exception& error) {
    TITAN_FAIL_INPUT() << where(origin, error.mark) << ": malformed YAML: " << error.msg;
  }
}

void apply_yaml_file(JobConfig& config, const std::string& path, KeyOrigins* origins) {
  std::ifstream file(path);
  TITAN_CHECK_INPUT(file.good()) << "config file not found or unreadable: " << path;
  std::stringstream text;
  text << file.rdbuf();
  apply_yaml_text(config, text.str(), path, origins);
}

JobConfig load_job_config(const std::string& path) {
  JobConfig config;
  KeyOrigins origins;
  apply_yaml_file(config, path, &origins);
  config.job.config_file = path;
  validate(config, &origins);
  return config;
}

std::string to_yaml(const JobConfig& config) {
  std::string out;
  std::vector<std::string> open;  // the sections the previous key sat in
  std::set<std::string> closed;   // a section opened twice would be a duplicate key
  auto joined = [](const std::vector<std::string>& path, size_t depth) {
    std::string name;
    for (size_t i = 0; i <= depth; ++i) name += (i ? "." : "") + path[i];
    return name;
  };
  for (const Field& field : job_config_fields()) {
    if (field.command_line_only) continue;
    std::vector<std::string> path;
    std::stringstream parts(field.name);
    for (std::string part; std::getline(parts, part, '.');) path.push_back(part);
    const std::string key = path.back();
    path.pop_back();
    size_t common = 0;
    while (common < open.size() && common < path.size() && open[common] == path[common]) {
      ++common;
    }
    for (size_t depth = common; depth < open.size(); ++depth) closed.insert(joined(open, depth));
    for (size_t depth = common; depth < path.size(); ++depth) {
      TITAN_CHECK(closed.count(joined(path, depth)) == 0)
          << field.name << " is not next to the other keys of its section in the field table";
      out += std::string(2 * depth, ' ') + path[depth] + ":\n";
    }
    open = path;
    out += std::string(2 * path.size(), ' ') + key + ": " + format_yaml(field.get(config)) + "\n";
  }
  return out;
}

}  // namespace titan::config
