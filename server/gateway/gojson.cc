#include "server/gateway/gojson.h"

#include <cerrno>
#include <cstdlib>
#include <limits>
#include <memory>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>

namespace engram::server::gateway {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// ------------------------------------------------------------------ scanner

struct JVal {
  enum Kind { kNull, kBool, kNumber, kString, kObject, kArray } kind = kNull;
  std::string_view raw;  // the value's bytes in the body (numbers, quoted strings)
  std::string str;       // a string's decoded content
  bool b = false;
  std::vector<std::pair<std::string, JVal>> members;  // objects, in order
  std::vector<JVal> items;                            // arrays
};

const char* KindName(JVal::Kind k) {
  switch (k) {
    case JVal::kNull: return "null";
    case JVal::kBool: return "bool";
    case JVal::kNumber: return "number";
    case JVal::kString: return "string";
    case JVal::kObject: return "object";
    case JVal::kArray: return "array";
  }
  return "value";
}

// Go's quoteChar.
std::string QuoteChar(unsigned char c) {
  if (c == '\'') return "'\\''";
  if (c == '"') return "'\"'";
  switch (c) {
    case '\n': return "'\\n'";
    case '\r': return "'\\r'";
    case '\t': return "'\\t'";
    case '\b': return "'\\b'";
    case '\f': return "'\\f'";
    case '\v': return "'\\v'";
    case '\a': return "'\\a'";
    default: break;
  }
  if (c < 0x20 || c == 0x7f) {
    char b[16];
    std::snprintf(b, sizeof b, "'\\x%02x'", c);
    return b;
  }
  if (c >= 0x80) {  // Go prints the byte as the rune U+00XX
    std::string s = "'";
    s.push_back(static_cast<char>(0xc0 | (c >> 6)));
    s.push_back(static_cast<char>(0x80 | (c & 0x3f)));
    return s + "'";
  }
  return std::string("'") + static_cast<char>(c) + "'";
}

class Scanner {
 public:
  explicit Scanner(std::string_view s, size_t pos = 0) : s_(s), i_(pos) {}
  size_t pos() const { return i_; }
  const std::string& error() const { return err_; }

  void SkipSpace() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool AtEnd() {
    SkipSpace();
    return i_ >= s_.size();
  }

  bool Value(JVal* v, int depth = 0) {
    SkipSpace();
    if (i_ >= s_.size()) return Eof();
    if (depth > 10000) return Fail(s_[i_], "looking for beginning of value");
    const size_t start = i_;
    const char c = s_[i_];
    bool ok;
    if (c == '{') {
      ok = Object(v, depth);
    } else if (c == '[') {
      ok = Array(v, depth);
    } else if (c == '"') {
      v->kind = JVal::kString;
      ok = String(&v->str);
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v->kind = JVal::kNumber;
      ok = Number();
    } else if (c == 't') {
      v->kind = JVal::kBool;
      v->b = true;
      ok = Literal("true");
    } else if (c == 'f') {
      v->kind = JVal::kBool;
      ok = Literal("false");
    } else if (c == 'n') {
      v->kind = JVal::kNull;
      ok = Literal("null");
    } else {
      return Fail(c, "looking for beginning of value");
    }
    if (ok) v->raw = s_.substr(start, i_ - start);
    return ok;
  }

 private:
  bool Eof() {
    err_ = "unexpected EOF";
    return false;
  }
  bool Fail(char c, const char* context) {
    err_ = "invalid character " + QuoteChar(static_cast<unsigned char>(c)) + " " + context;
    return false;
  }
  bool Literal(const char* lit) {
    const std::string l = lit;
    for (size_t k = 0; k < l.size(); ++k, ++i_) {
      if (i_ >= s_.size()) return Eof();
      if (s_[i_] != l[k]) {
        return Fail(s_[i_], ("in literal " + l + " (expecting '" + l[k] + "')").c_str());
      }
    }
    return true;
  }
  bool Number() {
    if (s_[i_] == '-') {
      ++i_;
      if (i_ >= s_.size()) return Eof();
      if (!(s_[i_] >= '0' && s_[i_] <= '9')) return Fail(s_[i_], "in numeric literal");
    }
    if (s_[i_] == '0') {
      ++i_;
    } else {
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    }
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (i_ >= s_.size()) return Eof();
      if (!(s_[i_] >= '0' && s_[i_] <= '9')) return Fail(s_[i_], "after decimal point in numeric literal");
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (i_ >= s_.size()) return Eof();
      if (!(s_[i_] >= '0' && s_[i_] <= '9')) return Fail(s_[i_], "in exponent of numeric literal");
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    }
    return true;
  }
  static int Hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static void PutUtf8(std::string* out, uint32_t r) {
    if (r < 0x80) {
      out->push_back(static_cast<char>(r));
    } else if (r < 0x800) {
      out->push_back(static_cast<char>(0xc0 | (r >> 6)));
      out->push_back(static_cast<char>(0x80 | (r & 0x3f)));
    } else if (r < 0x10000) {
      out->push_back(static_cast<char>(0xe0 | (r >> 12)));
      out->push_back(static_cast<char>(0x80 | ((r >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (r & 0x3f)));
    } else {
      out->push_back(static_cast<char>(0xf0 | (r >> 18)));
      out->push_back(static_cast<char>(0x80 | ((r >> 12) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | ((r >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (r & 0x3f)));
    }
  }
  bool Hex4(uint32_t* r) {
    *r = 0;
    for (int k = 0; k < 4; ++k, ++i_) {
      if (i_ >= s_.size()) return Eof();
      const int h = Hex(s_[i_]);
      if (h < 0) return Fail(s_[i_], "in \\u hexadecimal character escape");
      *r = *r * 16 + static_cast<uint32_t>(h);
    }
    return true;
  }
  bool String(std::string* out) {
    ++i_;  // the opening quote
    while (true) {
      if (i_ >= s_.size()) return Eof();
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return Fail(static_cast<char>(c), "in string literal");
      if (c != '\\') {
        out->push_back(static_cast<char>(c));
        ++i_;
        continue;
      }
      ++i_;
      if (i_ >= s_.size()) return Eof();
      const char e = s_[i_++];
      switch (e) {
        case '"': out->push_back('"'); break;
        case '\\': out->push_back('\\'); break;
        case '/': out->push_back('/'); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u': {
          uint32_t r;
          if (!Hex4(&r)) return false;
          if (r >= 0xd800 && r < 0xdc00 && i_ + 6 <= s_.size() && s_[i_] == '\\' && s_[i_ + 1] == 'u') {
            const size_t save = i_;
            i_ += 2;
            uint32_t lo;
            if (Hex4(&lo) && lo >= 0xdc00 && lo < 0xe000) {
              r = 0x10000 + ((r - 0xd800) << 10) + (lo - 0xdc00);
            } else {
              err_.clear();
              i_ = save;
              r = 0xfffd;
            }
          } else if (r >= 0xd800 && r < 0xe000) {
            r = 0xfffd;
          }
          PutUtf8(out, r);
          break;
        }
        default:
          return Fail(e, "in string escape code");
      }
    }
  }
  bool Object(JVal* v, int depth) {
    v->kind = JVal::kObject;
    ++i_;
    SkipSpace();
    if (i_ >= s_.size()) return Eof();
    if (s_[i_] == '}') {
      ++i_;
      return true;
    }
    while (true) {
      SkipSpace();
      if (i_ >= s_.size()) return Eof();
      if (s_[i_] != '"') return Fail(s_[i_], "looking for beginning of object key string");
      std::string key;
      if (!String(&key)) return false;
      SkipSpace();
      if (i_ >= s_.size()) return Eof();
      if (s_[i_] != ':') return Fail(s_[i_], "after object key");
      ++i_;
      JVal m;
      if (!Value(&m, depth + 1)) return false;
      v->members.emplace_back(std::move(key), std::move(m));
      SkipSpace();
      if (i_ >= s_.size()) return Eof();
      if (s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (s_[i_] == '}') {
        ++i_;
        return true;
      }
      return Fail(s_[i_], "after object key:value pair");
    }
  }
  bool Array(JVal* v, int depth) {
    v->kind = JVal::kArray;
    ++i_;
    SkipSpace();
    if (i_ >= s_.size()) return Eof();
    if (s_[i_] == ']') {
      ++i_;
      return true;
    }
    while (true) {
      JVal item;
      if (!Value(&item, depth + 1)) return false;
      v->items.push_back(std::move(item));
      SkipSpace();
      if (i_ >= s_.size()) return Eof();
      if (s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (s_[i_] == ']') {
        ++i_;
        return true;
      }
      return Fail(s_[i_], "after array element");
    }
  }

  std::string_view s_;
  size_t i_;
  std::string err_;
};

// ------------------------------------------------------------------ values

std::string TypeError(const std::string& what, const std::string& type) {
  return "json: cannot unmarshal " + what + " into Go value of type " + type;
}

// The Go type name of a protobuf enum: "etcdserverpb.RangeRequest_SortOrder".
std::string GoEnumName(const google::protobuf::EnumDescriptor* e) {
  const std::string pkg = e->file()->package();
  std::string rest = e->full_name().substr(pkg.empty() ? 0 : pkg.size() + 1);
  for (char& c : rest)
    if (c == '.') c = '_';
  return pkg.empty() ? rest : pkg + "." + rest;
}

const char* GoIntType(FieldDescriptor::CppType t) {
  switch (t) {
    case FieldDescriptor::CPPTYPE_INT64: return "int64";
    case FieldDescriptor::CPPTYPE_UINT64: return "uint64";
    case FieldDescriptor::CPPTYPE_INT32: return "int32";
    case FieldDescriptor::CPPTYPE_UINT32: return "uint32";
    default: return "int";
  }
}

// encoding/json's base64.StdEncoding.Decode (CR and LF skipped).
bool GoBase64(const std::string& src, std::string* out, std::string* err) {
  static int8_t map[256];
  static bool init = [] {
    for (int k = 0; k < 256; ++k) map[k] = -1;
    const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int k = 0; k < 64; ++k) map[static_cast<unsigned char>(a[k])] = static_cast<int8_t>(k);
    return true;
  }();
  (void)init;
  auto corrupt = [&](size_t at) {
    *err = "illegal base64 data at input byte " + std::to_string(at);
    return false;
  };
  const size_t n = src.size();
  size_t si = 0;
  while (si < n) {
    uint8_t dbuf[4] = {0, 0, 0, 0};
    size_t dlen = 4;
    bool end = false;
    for (size_t j = 0; j < 4; ++j) {
      if (si == n) {
        if (j == 0) return true;
        return corrupt(si - j);  // padding required
      }
      const unsigned char in = static_cast<unsigned char>(src[si++]);
      if (map[in] >= 0) {
        dbuf[j] = static_cast<uint8_t>(map[in]);
        continue;
      }
      if (in == '\n' || in == '\r') {
        --j;
        continue;
      }
      if (in != '=') return corrupt(si - 1);
      if (j == 0 || j == 1) return corrupt(si - 1);
      if (j == 2) {
        while (si < n && (src[si] == '\n' || src[si] == '\r')) ++si;
        if (si == n) return corrupt(n);
        if (src[si] != '=') return corrupt(si - 1);
        ++si;
      }
      while (si < n && (src[si] == '\n' || src[si] == '\r')) ++si;
      if (si < n) return corrupt(si);  // trailing garbage
      dlen = j;
      end = true;
      break;
    }
    const uint32_t v = (uint32_t{dbuf[0]} << 18) | (uint32_t{dbuf[1]} << 12) | (uint32_t{dbuf[2]} << 6) | dbuf[3];
    if (dlen >= 2) out->push_back(static_cast<char>(v >> 16));
    if (dlen >= 3) out->push_back(static_cast<char>(v >> 8));
    if (dlen >= 4) out->push_back(static_cast<char>(v));
    if (end) return true;
  }
  return true;
}

// json.Unmarshal of a number's bytes into a Go integer type (jsonpb strips
// the quotes of a quoted number first, without unescaping).
bool GoInt(std::string_view raw, FieldDescriptor::CppType t, const std::string& type_name, int64_t* si,
           uint64_t* ui, std::string* err) {
  Scanner sc(raw);
  JVal v;
  if (!sc.Value(&v)) {
    *err = sc.error() == "unexpected EOF" ? "unexpected end of JSON input" : sc.error();
    return false;
  }
  if (!sc.AtEnd()) {
    *err = "invalid character " + QuoteChar(static_cast<unsigned char>(raw[sc.pos()])) + " after top-level value";
    return false;
  }
  if (v.kind == JVal::kNull) return true;  // leaves the default
  if (v.kind != JVal::kNumber) {
    *err = TypeError(KindName(v.kind), type_name);
    return false;
  }
  const std::string lit(v.raw);
  auto bad = [&] {
    *err = TypeError("number " + lit, type_name);
    return false;
  };
  if (lit.find_first_of(".eE") != std::string::npos) return bad();
  errno = 0;
  char* endp = nullptr;
  if (t == FieldDescriptor::CPPTYPE_UINT64 || t == FieldDescriptor::CPPTYPE_UINT32) {
    if (lit[0] == '-') return bad();
    const unsigned long long x = std::strtoull(lit.c_str(), &endp, 10);
    if (errno != 0 || (t == FieldDescriptor::CPPTYPE_UINT32 && x > std::numeric_limits<uint32_t>::max())) return bad();
    *ui = x;
  } else {
    const long long x = std::strtoll(lit.c_str(), &endp, 10);
    if (errno != 0 || (t == FieldDescriptor::CPPTYPE_INT32 && (x < std::numeric_limits<int32_t>::min() ||
                                                               x > std::numeric_limits<int32_t>::max())))
      return bad();
    *si = x;
  }
  return true;
}

std::string FillMessage(const JVal& obj, Message* m);

// One value (an element, for repeated fields) into field f of m.
std::string SetValue(const JVal& v, const FieldDescriptor* f, Message* m) {
  const Reflection* r = m->GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      if (v.kind != JVal::kObject) return TypeError(KindName(v.kind), "map[string]json.RawMessage");
      Message* sub = rep ? r->AddMessage(m, f) : r->MutableMessage(m, f);
      return FillMessage(v, sub);
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* e = f->enum_type();
      if (v.kind == JVal::kString) {
        const auto* ev = e->FindValueByName(v.str);
        if (ev == nullptr) return "unknown value " + std::string(v.raw) + " for enum " + GoEnumName(e);
        if (rep) r->AddEnumValue(m, f, ev->number());
        else r->SetEnumValue(m, f, ev->number());
        return "";
      }
      int64_t x = 0;
      uint64_t ux = 0;
      std::string err;
      if (!GoInt(v.raw, FieldDescriptor::CPPTYPE_INT32, GoEnumName(e), &x, &ux, &err)) return err;
      if (rep) r->AddEnumValue(m, f, static_cast<int>(x));
      else r->SetEnumValue(m, f, static_cast<int>(x));
      return "";
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      if (v.kind != JVal::kBool) return TypeError(KindName(v.kind), "bool");
      if (rep) r->AddBool(m, f, v.b);
      else r->SetBool(m, f, v.b);
      return "";
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      const bool bytes = f->type() == FieldDescriptor::TYPE_BYTES;
      if (v.kind != JVal::kString) return TypeError(KindName(v.kind), bytes ? "[]uint8" : "string");
      std::string val, err;
      if (bytes) {
        if (!GoBase64(v.str, &val, &err)) return err;
      } else {
        val = v.str;
      }
      if (rep) r->AddString(m, f, std::move(val));
      else r->SetString(m, f, std::move(val));
      return "";
    }
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT64:
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_UINT32: {
      std::string_view raw = v.raw;
      if (v.kind == JVal::kString) raw = raw.substr(1, raw.size() - 2);  // jsonpb drops the quotes, nothing more
      int64_t x = 0;
      uint64_t ux = 0;
      std::string err;
      if (!GoInt(raw, f->cpp_type(), GoIntType(f->cpp_type()), &x, &ux, &err)) return err;
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT64:
          rep ? r->AddInt64(m, f, x) : r->SetInt64(m, f, x);
          break;
        case FieldDescriptor::CPPTYPE_UINT64:
          rep ? r->AddUInt64(m, f, ux) : r->SetUInt64(m, f, ux);
          break;
        case FieldDescriptor::CPPTYPE_INT32:
          rep ? r->AddInt32(m, f, static_cast<int32_t>(x)) : r->SetInt32(m, f, static_cast<int32_t>(x));
          break;
        default:
          rep ? r->AddUInt32(m, f, static_cast<uint32_t>(ux)) : r->SetUInt32(m, f, static_cast<uint32_t>(ux));
          break;
      }
      return "";
    }
    default:
      return "json: unsupported field type";
  }
}

std::string FillMessage(const JVal& obj, Message* m) {
  const Descriptor* d = m->GetDescriptor();
  for (int k = 0; k < d->field_count(); ++k) {
    const FieldDescriptor* f = d->field(k);
    // The .proto name wins over the lowerCamel one; the last duplicate wins.
    const JVal* v = nullptr;
    for (const auto& [name, val] : obj.members)
      if (name == f->name()) v = &val;
    if (v == nullptr && f->json_name() != f->name()) {
      for (const auto& [name, val] : obj.members)
        if (name == f->json_name()) v = &val;
    }
    if (v == nullptr || v->kind == JVal::kNull) continue;
    if (f->is_repeated()) {
      if (v->kind != JVal::kArray) return TypeError(KindName(v->kind), "[]json.RawMessage");
      for (const auto& item : v->items) {
        std::string err = SetValue(item, f, m);
        if (!err.empty()) return err;
      }
      continue;
    }
    std::string err = SetValue(*v, f, m);
    if (!err.empty()) return err;
  }
  return "";
}

}  // namespace

bool NextJsonValue(std::string_view body, size_t* pos, std::string_view* value, std::string* error) {
  Scanner sc(body, *pos);
  error->clear();
  *value = {};
  if (sc.AtEnd()) {
    *pos = body.size();
    return true;
  }
  const size_t start = sc.pos();
  JVal v;
  if (!sc.Value(&v)) {
    *error = sc.error();
    return false;
  }
  *value = body.substr(start, sc.pos() - start);
  *pos = sc.pos();
  return true;
}

std::string GoJsonToMessage(std::string_view body, Message* m) {
  Scanner sc(body);
  if (sc.AtEnd()) return "";  // io.EOF: an empty request
  JVal v;
  if (!sc.Value(&v)) return sc.error();
  if (v.kind == JVal::kNull) return "";
  if (v.kind != JVal::kObject) return TypeError(KindName(v.kind), "map[string]json.RawMessage");
  return FillMessage(v, m);
}

}  // namespace engram::server::gateway
