// A rule-for-rule port of Spider's process_sql.py (tokenize, get_sql and the parse_* functions). Where
// the official code indexes past the end of the token list or misses a dictionary key, this throws
// SqlParseError; the evaluator then scores the prediction as the official script does for a parse error.
#include "server/engine/tasks/spider_sql_parser.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>

#include "server/engine/tasks/text_files.h"

namespace statetune::tasks::spider {
namespace {

constexpr std::array<std::string_view, 9> kClauseKeywords = {"select", "from",  "where",     "group", "order",
                                                             "limit",  "intersect", "union", "except"};
constexpr std::array<std::string_view, 3> kJoinKeywords = {"join", "on", "as"};
constexpr std::array<std::string_view, 12> kWhereOps = {"not", "between", "=",  ">",    "<",  ">=",
                                                        "<=",  "!=",      "in", "like", "is", "exists"};
constexpr std::array<std::string_view, 5> kUnitOps = {"none", "-", "+", "*", "/"};
constexpr std::array<std::string_view, 6> kAggOps = {"none", "max", "min", "count", "sum", "avg"};
constexpr std::array<std::string_view, 3> kSqlOps = {"intersect", "union", "except"};

template <size_t N>
int index_of(const std::array<std::string_view, N>& list, std::string_view tok) {
  for (size_t i = 0; i < N; ++i)
    if (list[i] == tok) return static_cast<int>(i);
  return -1;
}

template <size_t N>
bool contains(const std::array<std::string_view, N>& list, std::string_view tok) {
  return index_of(list, tok) >= 0;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Python's float(str) for an already stripped token: decimal literals with optional sign, exponent and
// digit-separating underscores, or inf / infinity / nan.
bool python_float(std::string_view tok, double* value) {
  std::string_view body = tok;
  bool negative = false;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    negative = body[0] == '-';
    body.remove_prefix(1);
  }
  const std::string word = lower(body);
  if (word == "inf" || word == "infinity") {
    *value = negative ? -HUGE_VAL : HUGE_VAL;
    return true;
  }
  if (word == "nan") {
    *value = std::nan("");
    return true;
  }
  std::string digits;
  size_t i = 0, mantissa_digits = 0;
  auto take_digits = [&](size_t* count) {
    while (i < body.size()) {
      if (is_digit(body[i])) {
        digits += body[i++];
        ++*count;
      } else if (body[i] == '_' && i > 0 && is_digit(body[i - 1]) && i + 1 < body.size() && is_digit(body[i + 1])) {
        ++i;
      } else {
        break;
      }
    }
  };
  take_digits(&mantissa_digits);
  if (i < body.size() && body[i] == '.') {
    digits += body[i++];
    if (i < body.size() && body[i] == '_') return false;
    take_digits(&mantissa_digits);
  }
  if (mantissa_digits == 0) return false;
  if (i < body.size() && (body[i] == 'e' || body[i] == 'E')) {
    digits += body[i++];
    if (i < body.size() && (body[i] == '+' || body[i] == '-')) digits += body[i++];
    size_t exponent_digits = 0;
    if (i < body.size() && body[i] == '_') return false;
    take_digits(&exponent_digits);
    if (exponent_digits == 0) return false;
  }
  if (i != body.size()) return false;
  const double v = std::strtod(digits.c_str(), nullptr);
  *value = negative ? -v : v;
  return true;
}

// Python's int(str) for a token.
bool python_int(std::string_view tok, int64_t* value) {
  std::string_view body = tok;
  bool negative = false;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    negative = body[0] == '-';
    body.remove_prefix(1);
  }
  if (body.empty() || !is_digit(body.front()) || !is_digit(body.back())) return false;
  int64_t v = 0;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] == '_' && is_digit(body[i - 1]) && is_digit(body[i + 1])) continue;
    if (!is_digit(body[i])) return false;
    v = v * 10 + (body[i] - '0');
  }
  *value = negative ? -v : v;
  return true;
}

// --- NLTK word tokenizer (NLTKWordTokenizer, the one word_tokenize uses), as far as it can change a
// query whose quoted literals have already been replaced by placeholder words.

bool starts_with_at(std::string_view s, size_t i, std::string_view p) { return s.substr(i, p.size()) == p; }

// Unicode opening quotes (« “ ‘ „) and closing quotes (» ” ’) that NLTK splits off.
size_t unicode_quote_length(std::string_view s, size_t i) {
  for (std::string_view q : {"\xC2\xAB", "\xE2\x80\x9C", "\xE2\x80\x98", "\xE2\x80\x9E", "\xC2\xBB",
                             "\xE2\x80\x9D", "\xE2\x80\x99"}) {
    if (starts_with_at(s, i, q)) return q.size();
  }
  return 0;
}

std::string nltk_split_punctuation(std::string s) {
  // Unicode quotes and runs of backticks: " \1 ".
  {
    std::string out;
    for (size_t i = 0; i < s.size();) {
      const size_t q = unicode_quote_length(s, i);
      if (q > 0) {
        out += ' ' + s.substr(i, q) + ' ';
        i += q;
      } else if (s[i] == '`') {
        size_t j = i;
        while (j < s.size() && s[j] == '`') ++j;
        out += ' ' + s.substr(i, j - i) + ' ';
        i = j;
      } else {
        out += s[i++];
      }
    }
    s = std::move(out);
  }
  // The final period: ([^\.])(\.)([\]\)}>"\' ]*)\s*$ -> "\1 \2 \3 ".
  {
    size_t end = s.size();
    while (end > 0 && (s[end - 1] == ' ' || (s[end - 1] >= '\t' && s[end - 1] <= '\r'))) --end;
    size_t closers = end;
    while (closers > 0 && std::string_view("])}>\"' ").find(s[closers - 1]) != std::string_view::npos) --closers;
    if (closers >= 2 && s[closers - 1] == '.' && s[closers - 2] != '.') {
      s = s.substr(0, closers - 1) + " . " + s.substr(closers, end - closers) + " ";
    }
  }
  std::string out;
  out.reserve(s.size() * 2);
  // ([:,])([^\d]) -> " \1 \2" and ([:,])$ -> " \1 ", scanning without overlap.
  for (size_t i = 0; i < s.size();) {
    if ((s[i] == ':' || s[i] == ',') && (i + 1 == s.size() || !is_digit(s[i + 1]))) {
      out += ' ';
      out += s[i];
      out += ' ';
      if (i + 1 < s.size()) out += s[i + 1];
      i += 2;
    } else {
      out += s[i++];
    }
  }
  s = std::move(out);
  out.clear();
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '.' && i + 1 < s.size() && s[i + 1] == '.') {  // \.{2,}
      size_t j = i;
      while (j < s.size() && s[j] == '.') ++j;
      out += ' ' + s.substr(i, j - i) + ' ';
      i = j;
    } else if (std::string_view(";@#$%&?!*[](){}<>").find(s[i]) != std::string_view::npos) {
      out += ' ';
      out += s[i++];
      out += ' ';
    } else if (s[i] == '-' && i + 1 < s.size() && s[i + 1] == '-') {
      out += " -- ";
      i += 2;
    } else {
      out += s[i++];
    }
  }
  return out;
}

// --- The parser.

struct SchemaView {
  std::map<std::string, std::vector<std::string>> columns;  // table -> columns, lowercase
  std::vector<std::string> table_order;
  std::map<std::string, std::string> id_map;  // "*", "table.col", "table" -> evaluator id
};

SchemaView make_schema_view(const SpiderSchema& schema) {
  SchemaView view;
  view.id_map["*"] = "__all__";
  for (const auto& name : schema.table_names) {
    const std::string t = lower(name);
    if (!view.columns.count(t)) view.table_order.push_back(t);
    view.columns[t];
  }
  for (const auto& c : schema.columns) {
    if (c.table < 0) continue;
    const std::string t = lower(schema.table_names.at(static_cast<size_t>(c.table)));
    const std::string col = lower(c.name);
    view.columns[t].push_back(col);
    view.id_map[t + "." + col] = "__" + t + "." + col + "__";
  }
  for (const auto& t : view.table_order) view.id_map[t] = "__" + t + "__";
  return view;
}

class Parser {
 public:
  Parser(std::vector<std::string> toks, const SchemaView& schema, const std::map<std::string, std::string>& aliases)
      : toks_(std::move(toks)), schema_(schema), aliases_(aliases) {}

  Sql parse_sql(size_t& idx) {
    const size_t start = idx;
    bool block = false;
    if (at(idx) == "(") {
      block = true;
      ++idx;
    }
    Sql sql;
    std::vector<std::string> default_tables;
    const size_t from_end = parse_from(start, sql, default_tables);
    size_t select_idx = idx;
    parse_select(select_idx, sql, default_tables);
    idx = from_end;
    sql.where = parse_clause_condition(idx, "where", default_tables);
    parse_group_by(idx, sql, default_tables);
    sql.having = parse_clause_condition(idx, "having", default_tables);
    parse_order_by(idx, sql, default_tables);
    if (is(idx, "limit")) {
      idx += 2;
      int64_t limit = 0;
      if (!python_int(at(idx - 1), &limit)) fail("LIMIT needs an integer, got '" + toks_[idx - 1] + "'");
      sql.limit = limit;
    }
    skip_semicolons(idx);
    if (block) {
      expect(idx, ")");
      ++idx;
    }
    skip_semicolons(idx);
    if (idx < toks_.size() && contains(kSqlOps, toks_[idx])) {
      const std::string op = toks_[idx++];
      auto nested = std::make_shared<const Sql>(parse_sql(idx));
      if (op == "intersect") sql.intersect = nested;
      if (op == "union") sql.union_ = nested;
      if (op == "except") sql.except_ = nested;
    }
    return sql;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw SqlParseError(what); }

  const std::string& at(size_t i) const {
    if (i >= toks_.size()) fail("the query ends where more SQL was expected");
    return toks_[i];
  }
  bool is(size_t i, std::string_view tok) const { return i < toks_.size() && toks_[i] == tok; }
  void expect(size_t i, std::string_view tok) const {
    if (at(i) != tok) fail("expected '" + std::string(tok) + "' but found '" + toks_[i] + "'");
  }
  bool ends_clause(size_t i) const {
    return i < toks_.size() && (contains(kClauseKeywords, toks_[i]) || toks_[i] == ")" || toks_[i] == ";");
  }
  void skip_semicolons(size_t& idx) const {
    while (is(idx, ";")) ++idx;
  }

  const std::string& alias_target(const std::string& alias) const {
    const auto it = aliases_.find(alias);
    if (it == aliases_.end()) fail("unknown table or alias '" + alias + "'");
    return it->second;
  }
  const std::string& id_of(const std::string& key) const {
    const auto it = schema_.id_map.find(key);
    if (it == schema_.id_map.end()) fail("'" + key + "' is not a table or column of the database");
    return it->second;
  }

  std::string parse_col(size_t& idx, const std::vector<std::string>& default_tables) {
    const std::string& tok = at(idx);
    if (tok == "*") {
      ++idx;
      return id_of("*");
    }
    if (tok.find('.') != std::string::npos) {
      const size_t dot = tok.find('.');
      if (tok.find('.', dot + 1) != std::string::npos) fail("column '" + tok + "' has more than one '.'");
      const std::string key = alias_target(tok.substr(0, dot)) + "." + tok.substr(dot + 1);
      const std::string& id = id_of(key);
      ++idx;
      return id;
    }
    if (default_tables.empty()) fail("column '" + tok + "' outside of a FROM clause");
    for (const auto& alias : default_tables) {
      const std::string& table = alias_target(alias);
      const auto cols = schema_.columns.find(table);
      if (cols == schema_.columns.end()) fail("'" + table + "' is not a table of the database");
      if (std::find(cols->second.begin(), cols->second.end(), tok) != cols->second.end()) {
        ++idx;
        return id_of(table + "." + tok);
      }
    }
    fail("column '" + tok + "' is in none of the FROM tables");
  }

  ColUnit parse_col_unit(size_t& idx, const std::vector<std::string>& default_tables) {
    bool block = false;
    ColUnit unit;
    if (at(idx) == "(") {
      block = true;
      ++idx;
    }
    const int agg = index_of(kAggOps, at(idx));
    if (agg >= 0) {
      unit.agg = agg;
      ++idx;
      if (!is(idx, "(")) fail("expected '(' after " + std::string(kAggOps[agg]));
      ++idx;
      if (at(idx) == "distinct") {
        ++idx;
        unit.distinct = true;
      }
      unit.column = parse_col(idx, default_tables);
      if (!is(idx, ")")) fail("expected ')' to close " + std::string(kAggOps[agg]) + "(");
      ++idx;
      return unit;  // as the official parser, an enclosing '(' is left to the caller
    }
    if (at(idx) == "distinct") {
      ++idx;
      unit.distinct = true;
    }
    unit.column = parse_col(idx, default_tables);
    if (block) {
      expect(idx, ")");
      ++idx;
    }
    return unit;
  }

  ValUnit parse_val_unit(size_t& idx, const std::vector<std::string>& default_tables) {
    bool block = false;
    if (at(idx) == "(") {
      block = true;
      ++idx;
    }
    ValUnit unit;
    unit.col1 = parse_col_unit(idx, default_tables);
    if (idx < toks_.size() && contains(kUnitOps, toks_[idx])) {
      unit.unit_op = index_of(kUnitOps, toks_[idx]);
      ++idx;
      unit.col2 = parse_col_unit(idx, default_tables);
    }
    if (block) {
      expect(idx, ")");
      ++idx;
    }
    return unit;
  }

  Value parse_value(size_t& idx, const std::vector<std::string>& default_tables) {
    const size_t start = idx;
    bool block = false;
    if (at(idx) == "(") {
      block = true;
      ++idx;
    }
    Value value;
    double number = 0;
    if (at(idx) == "select") {
      value.kind = Value::Kind::kSql;
      value.sql = std::make_shared<const Sql>(parse_sql(idx));
    } else if (toks_[idx].find('"') != std::string::npos) {
      value.kind = Value::Kind::kString;
      value.text = toks_[idx++];
    } else if (python_float(toks_[idx], &number)) {
      value.kind = Value::Kind::kNumber;
      value.number = number;
      ++idx;
    } else {
      // A column on the right-hand side: the official parser re-parses the tokens up to the next
      // separator as a column unit of their own.
      size_t end = idx;
      while (end < toks_.size() && toks_[end] != "," && toks_[end] != ")" && toks_[end] != "and" &&
             !contains(kClauseKeywords, toks_[end]) && !contains(kJoinKeywords, toks_[end])) {
        ++end;
      }
      Parser sub(std::vector<std::string>(toks_.begin() + static_cast<std::ptrdiff_t>(start),
                                          toks_.begin() + static_cast<std::ptrdiff_t>(end)),
                 schema_, aliases_);
      size_t sub_idx = 0;
      value.kind = Value::Kind::kColumn;
      value.column = sub.parse_col_unit(sub_idx, default_tables);
      idx = end;
    }
    if (block) {
      expect(idx, ")");
      ++idx;
    }
    return value;
  }

  Condition parse_condition(size_t& idx, const std::vector<std::string>& default_tables) {
    Condition cond;
    while (idx < toks_.size()) {
      CondUnit unit;
      unit.val_unit = parse_val_unit(idx, default_tables);
      if (at(idx) == "not") {
        unit.negated = true;
        ++idx;
      }
      if (idx >= toks_.size() || !contains(kWhereOps, toks_[idx])) {
        fail("expected a comparison operator, found '" + (idx < toks_.size() ? toks_[idx] : std::string("end")) + "'");
      }
      unit.op = index_of(kWhereOps, toks_[idx]);
      ++idx;
      if (unit.op == kBetween) {
        unit.val1 = parse_value(idx, default_tables);
        expect(idx, "and");
        ++idx;
        unit.val2 = parse_value(idx, default_tables);
      } else {
        unit.val1 = parse_value(idx, default_tables);
      }
      if (cond.units.size() > cond.conjunctions.size()) {
        // The official parser would accept two conditions in a row and then misread its own list
        // (conditions at odd positions); such SQL is rejected here instead.
        fail("two conditions without AND/OR between them");
      }
      cond.units.push_back(std::move(unit));
      if (ends_clause(idx) || (idx < toks_.size() && contains(kJoinKeywords, toks_[idx]))) break;
      if (is(idx, "and") || is(idx, "or")) cond.conjunctions.push_back(toks_[idx++]);
    }
    return cond;
  }

  void parse_select(size_t& idx, Sql& sql, const std::vector<std::string>& default_tables) {
    if (at(idx) != "select") fail("'select' not found");
    ++idx;
    if (is(idx, "distinct")) {
      ++idx;
      sql.select_distinct = true;
    }
    while (idx < toks_.size() && !contains(kClauseKeywords, toks_[idx])) {
      int agg = kAggNone;
      if (contains(kAggOps, toks_[idx])) {
        agg = index_of(kAggOps, toks_[idx]);
        ++idx;
      }
      sql.select.emplace_back(agg, parse_val_unit(idx, default_tables));
      if (is(idx, ",")) ++idx;
    }
  }

  size_t parse_from(size_t start, Sql& sql, std::vector<std::string>& default_tables) {
    size_t idx = start;
    while (idx < toks_.size() && toks_[idx] != "from") ++idx;
    if (idx == toks_.size()) fail("'from' not found");
    ++idx;
    while (idx < toks_.size()) {
      bool block = false;
      if (at(idx) == "(") {
        block = true;
        ++idx;
      }
      if (at(idx) == "select") {
        TableUnit unit;
        unit.sql = std::make_shared<const Sql>(parse_sql(idx));
        sql.from.push_back(std::move(unit));
      } else {
        if (is(idx, "join")) ++idx;
        const std::string& table = alias_target(at(idx));
        TableUnit unit;
        unit.table = id_of(table);
        idx += is(idx + 1, "as") ? 3 : 1;
        sql.from.push_back(std::move(unit));
        default_tables.push_back(table);
      }
      if (is(idx, "on")) {
        ++idx;
        Condition more = parse_condition(idx, default_tables);
        if (!sql.from_conds.empty()) sql.from_conds.conjunctions.push_back("and");
        for (auto& u : more.units) sql.from_conds.units.push_back(std::move(u));
        for (auto& c : more.conjunctions) sql.from_conds.conjunctions.push_back(std::move(c));
      }
      if (block) {
        expect(idx, ")");
        ++idx;
      }
      if (ends_clause(idx)) break;
    }
    return idx;
  }

  Condition parse_clause_condition(size_t& idx, std::string_view keyword,
                                   const std::vector<std::string>& default_tables) {
    if (!is(idx, keyword)) return {};
    ++idx;
    return parse_condition(idx, default_tables);
  }

  void parse_group_by(size_t& idx, Sql& sql, const std::vector<std::string>& default_tables) {
    if (!is(idx, "group")) return;
    ++idx;
    expect(idx, "by");
    ++idx;
    while (idx < toks_.size() && !ends_clause(idx)) {
      sql.group_by.push_back(parse_col_unit(idx, default_tables));
      if (is(idx, ",")) {
        ++idx;
      } else {
        break;
      }
    }
  }

  void parse_order_by(size_t& idx, Sql& sql, const std::vector<std::string>& default_tables) {
    if (!is(idx, "order")) return;
    ++idx;
    expect(idx, "by");
    ++idx;
    sql.has_order_by = true;
    sql.order_direction = "asc";
    while (idx < toks_.size() && !ends_clause(idx)) {
      sql.order_by.push_back(parse_val_unit(idx, default_tables));
      if (is(idx, "desc") || is(idx, "asc")) sql.order_direction = toks_[idx++];
      if (is(idx, ",")) {
        ++idx;
      } else {
        break;
      }
    }
  }

  std::vector<std::string> toks_;
  const SchemaView& schema_;
  const std::map<std::string, std::string>& aliases_;
};

// process_sql.get_tables_with_alias: every "x AS y" maps y to x (column aliases too), then each table
// maps to itself; an alias named like a table is an error.
std::map<std::string, std::string> tables_with_alias(const std::vector<std::string>& toks, const SchemaView& schema) {
  std::map<std::string, std::string> aliases;
  for (size_t i = 0; i < toks.size(); ++i) {
    if (toks[i] != "as") continue;
    if (i + 1 >= toks.size() || i == 0) throw SqlParseError("'as' without a name on both sides");
    aliases[toks[i + 1]] = toks[i - 1];
  }
  for (const auto& table : schema.table_order) {
    if (aliases.count(table)) throw SqlParseError("alias '" + table + "' has the same name as a table");
    aliases[table] = table;
  }
  return aliases;
}

}  // namespace

bool operator==(const ColUnit& a, const ColUnit& b) {
  return a.agg == b.agg && a.column == b.column && a.distinct == b.distinct;
}
bool operator==(const ValUnit& a, const ValUnit& b) {
  return a.unit_op == b.unit_op && a.col1 == b.col1 && a.col2 == b.col2;
}
bool operator==(const Value& a, const Value& b) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::kNone: return true;
    case Value::Kind::kNumber: return a.number == b.number;
    case Value::Kind::kString: return a.text == b.text;
    case Value::Kind::kColumn: return a.column == b.column;
    case Value::Kind::kSql: return *a.sql == *b.sql;
  }
  return false;
}
bool operator==(const CondUnit& a, const CondUnit& b) {
  return a.negated == b.negated && a.op == b.op && a.val_unit == b.val_unit && a.val1 == b.val1 && a.val2 == b.val2;
}
bool operator==(const Condition& a, const Condition& b) {
  return a.units == b.units && a.conjunctions == b.conjunctions;
}
bool operator==(const TableUnit& a, const TableUnit& b) {
  if ((a.sql == nullptr) != (b.sql == nullptr)) return false;
  return a.sql ? *a.sql == *b.sql : a.table == b.table;
}
namespace {
bool same_nested(const SqlPtr& a, const SqlPtr& b) {
  if ((a == nullptr) != (b == nullptr)) return false;
  return a == nullptr || *a == *b;
}
}  // namespace
bool operator==(const Sql& a, const Sql& b) {
  return a.select_distinct == b.select_distinct && a.select == b.select && a.from == b.from &&
         a.from_conds == b.from_conds && a.where == b.where && a.group_by == b.group_by && a.having == b.having &&
         a.has_order_by == b.has_order_by && a.order_direction == b.order_direction && a.order_by == b.order_by &&
         a.limit == b.limit && same_nested(a.intersect, b.intersect) && same_nested(a.union_, b.union_) &&
         same_nested(a.except_, b.except_);
}

std::vector<std::string> tokenize_sql(std::string_view query) {
  std::string s(query);
  std::replace(s.begin(), s.end(), '\'', '"');
  std::vector<size_t> quotes;
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] == '"') quotes.push_back(i);
  if (quotes.size() % 2 != 0) throw SqlParseError("unexpected quote: the query has an odd number of quotes");
  // Literals become placeholder words (replaced from the end so earlier offsets stay valid).
  std::map<std::string, std::string> literals;
  for (size_t k = quotes.size(); k >= 2; k -= 2) {
    const size_t q1 = quotes[k - 2], q2 = quotes[k - 1];
    const std::string key = "__val_" + std::to_string(q1) + "_" + std::to_string(q2) + "__";
    literals[key] = s.substr(q1, q2 - q1 + 1);
    s = s.substr(0, q1) + key + s.substr(q2 + 1);
  }
  std::vector<std::string> toks;
  for (auto& word : split_whitespace(nltk_split_punctuation(s))) {
    std::string tok = lower(word);
    if (const auto it = literals.find(tok); it != literals.end()) tok = it->second;
    toks.push_back(std::move(tok));
  }
  // "!", ">", "<" followed by "=" become one operator.
  for (size_t i = toks.size(); i-- > 1;) {
    if (toks[i] == "=" && (toks[i - 1] == "!" || toks[i - 1] == ">" || toks[i - 1] == "<")) {
      toks[i - 1] += "=";
      toks.erase(toks.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  return toks;
}

Sql parse_sql(std::string_view query, const SpiderSchema& schema) {
  const SchemaView view = make_schema_view(schema);
  std::vector<std::string> toks = tokenize_sql(query);
  if (toks.empty()) throw SqlParseError("empty query");
  const auto aliases = tables_with_alias(toks, view);
  Parser parser(std::move(toks), view, aliases);
  size_t idx = 0;
  return parser.parse_sql(idx);
}

namespace {

struct JsonIds {
  std::map<std::string, int> columns;
  std::map<std::string, int> tables;
};

nlohmann::json col_json(const ColUnit& c, const JsonIds& ids) {
  return nlohmann::json::array({c.agg, ids.columns.at(c.column), c.distinct});
}
nlohmann::json val_unit_json(const ValUnit& v, const JsonIds& ids) {
  return nlohmann::json::array(
      {v.unit_op, col_json(v.col1, ids), v.col2 ? col_json(*v.col2, ids) : nlohmann::json(nullptr)});
}
nlohmann::json sql_json(const Sql& sql, const JsonIds& ids);
nlohmann::json value_json(const Value& v, const JsonIds& ids) {
  switch (v.kind) {
    case Value::Kind::kNone: return nullptr;
    case Value::Kind::kNumber: return v.number;
    case Value::Kind::kString: return v.text;
    case Value::Kind::kColumn: return col_json(v.column, ids);
    case Value::Kind::kSql: return sql_json(*v.sql, ids);
  }
  return nullptr;
}
nlohmann::json condition_json(const Condition& c, const JsonIds& ids) {
  auto out = nlohmann::json::array();
  for (size_t i = 0; i < c.units.size(); ++i) {
    if (i > 0) out.push_back(c.conjunctions.at(i - 1));
    const CondUnit& u = c.units[i];
    out.push_back(nlohmann::json::array(
        {u.negated, u.op, val_unit_json(u.val_unit, ids), value_json(u.val1, ids), value_json(u.val2, ids)}));
  }
  return out;
}
nlohmann::json sql_json(const Sql& sql, const JsonIds& ids) {
  nlohmann::json j;
  auto tables = nlohmann::json::array();
  for (const auto& t : sql.from) {
    tables.push_back(t.sql ? nlohmann::json::array({"sql", sql_json(*t.sql, ids)})
                           : nlohmann::json::array({"table_unit", ids.tables.at(t.table)}));
  }
  j["from"] = {{"table_units", tables}, {"conds", condition_json(sql.from_conds, ids)}};
  auto select = nlohmann::json::array();
  for (const auto& [agg, v] : sql.select) select.push_back(nlohmann::json::array({agg, val_unit_json(v, ids)}));
  j["select"] = nlohmann::json::array({sql.select_distinct, select});
  j["where"] = condition_json(sql.where, ids);
  auto group = nlohmann::json::array();
  for (const auto& c : sql.group_by) group.push_back(col_json(c, ids));
  j["groupBy"] = group;
  j["having"] = condition_json(sql.having, ids);
  if (sql.has_order_by) {
    auto units = nlohmann::json::array();
    for (const auto& v : sql.order_by) units.push_back(val_unit_json(v, ids));
    j["orderBy"] = nlohmann::json::array({sql.order_direction, units});
  } else {
    j["orderBy"] = nlohmann::json::array();
  }
  j["limit"] = sql.limit ? nlohmann::json(*sql.limit) : nlohmann::json(nullptr);
  j["intersect"] = sql.intersect ? sql_json(*sql.intersect, ids) : nlohmann::json(nullptr);
  j["union"] = sql.union_ ? sql_json(*sql.union_, ids) : nlohmann::json(nullptr);
  j["except"] = sql.except_ ? sql_json(*sql.except_, ids) : nlohmann::json(nullptr);
  return j;
}

}  // namespace

nlohmann::json to_spider_json(const Sql& sql, const SpiderSchema& schema) {
  JsonIds ids;
  for (size_t i = 0; i < schema.columns.size(); ++i) ids.columns.emplace(schema.column_id(static_cast<int>(i)), static_cast<int>(i));
  for (size_t t = 0; t < schema.table_names.size(); ++t) {
    ids.tables.emplace("__" + lower(schema.table_names[t]) + "__", static_cast<int>(t));
  }
  return sql_json(sql, ids);
}

}  // namespace statetune::tasks::spider
