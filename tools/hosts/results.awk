# The end-to-end results of one runtime in trial's bwverbose output, as
# passed/failed/skipped: those of the test classes whose name ends in the
# runtime given as -v runtime=Go or -v runtime=Shimd. With --rterrors a
# failure's traceback comes between the test's name and its result, so the
# result is the next line that ends in one; the summary after trial's =====
# rule repeats the failures and is not counted. Lines that came through a
# serial console end in a carriage return, dropped here.
{ sub(/\r$/, "") }
/^=====/ { exit }
/^tests\.[A-Za-z0-9_.]+ \.\.\. / {
    n = split($1, parts, ".")
    mine = parts[n - 1] ~ (runtime "$")
}
mine && /\[OK\]$/ { passed++; mine = 0 }
mine && /\[(FAILURE|ERROR|SUCCESS!\?!)\]$/ { failed++; mine = 0 }
mine && /\[SKIPPED\]$/ { skipped++; mine = 0 }
END { printf "%d/%d/%d\n", passed, failed, skipped }
