#include <gtest/gtest.h>

#include <string>

#include "src/common/coding.h"
#include "src/common/crc32c.h"
#include "src/common/failpoint.h"
#include "src/common/log.h"
#include "src/common/status.h"

namespace engram {

TEST(Crc32c, KnownVectors) {
  // RFC 3720 B.4 test vectors.
  std::string zeros(32, '\0');
  EXPECT_EQ(0x8a9136aau, crc32c::Value(zeros.data(), zeros.size()));
  std::string ones(32, '\xff');
  EXPECT_EQ(0x62a8ab43u, crc32c::Value(ones.data(), ones.size()));
  EXPECT_EQ(0xe3069283u, crc32c::Value("123456789", 9));
}

TEST(Crc32c, HardwareMatchesPortableAndExtends) {
  std::string s;
  for (int i = 0; i < 1000; i++) s.push_back(static_cast<char>(i * 7 + 3));
  for (size_t n : {0, 1, 7, 8, 9, 63, 64, 65, 999, 1000}) {
    EXPECT_EQ(crc32c::ExtendPortable(0, s.data(), n), crc32c::Value(s.data(), n)) << n;
  }
  uint32_t whole = crc32c::Value(s.data(), s.size());
  uint32_t part = crc32c::Extend(crc32c::Value(s.data(), 333), s.data() + 333, s.size() - 333);
  EXPECT_EQ(whole, part);
}

TEST(Coding, RoundTrips) {
  std::string b;
  PutFixed32(&b, 0xdeadbeef);
  PutFixed64(&b, 0x0102030405060708ull);
  EXPECT_EQ(0xdeadbeefu, DecodeFixed32(b.data()));
  EXPECT_EQ(0x0102030405060708ull, DecodeFixed64(b.data() + 4));
  char big[8];
  EncodeBig64(big, 258);
  EXPECT_EQ(258u, DecodeBig64(big));
  EXPECT_EQ(1, big[6]);
  EXPECT_EQ(2, big[7]);
}

TEST(Status, ValuesAndResult) {
  Status s = Status::NotFound("etcdserver: requested lease not found");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(Code::kNotFound, s.code());
  EXPECT_EQ("NotFound: etcdserver: requested lease not found", s.ToString());
  Result<int> r = 5;
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(5, *r);
  Result<int> e = Status::Internal("x");
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(Code::kInternal, e.status().code());
}

TEST(Log, QuoteEscapes) {
  EXPECT_EQ("\"a\\\"b\\\\c\\n\\u0001\"", log::Quote("a\"b\\c\n\x01"));
}

TEST(Failpoint, ErrorAndOff) {
  EXPECT_FALSE(FAILPOINT("test-fp"));
  ASSERT_TRUE(failpoint::Set("test-fp", "error"));
  EXPECT_TRUE(FAILPOINT("test-fp"));
  ASSERT_TRUE(failpoint::Set("test-fp", "off"));
  EXPECT_FALSE(FAILPOINT("test-fp"));
  EXPECT_FALSE(failpoint::Set("test-fp", "bogus"));
}

}  // namespace engram
