/*
 * count_char(s, c) for Nexmark q14 on Flink: the number of bytes of the UTF-8 string s equal to
 * the first byte of c (0 when s is NULL). Written for benches/peers/flink_nexmark.py with the
 * class name and behaviour of the Nexmark suite's UDF (nexmark/nexmark,
 * nexmark-flink/src/main/java/com/github/nexmark/flink/udf/CountChar.java, Apache License 2.0),
 * so that q14.sql's `CREATE FUNCTION count_char AS 'com.github.nexmark.flink.udf.CountChar'`
 * runs unchanged. flink_nexmark.py compiles it with javac against PyFlink's jars.
 */
package com.github.nexmark.flink.udf;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.ScalarFunction;

public class CountChar extends ScalarFunction {

    public long eval(@DataTypeHint("STRING") StringData s, @DataTypeHint("STRING") StringData c) {
        if (s == null || c == null) {
            return 0;
        }
        byte[] needle = c.toBytes();
        if (needle.length == 0) {
            return 0;
        }
        byte target = needle[0];
        long n = 0;
        for (byte b : s.toBytes()) {
            if (b == target) {
                n++;
            }
        }
        return n;
    }
}
