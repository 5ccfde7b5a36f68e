using System.Globalization;
using System.Text;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tokenization.Templates;

/// <summary>Operators, attribute and item access, string and dict methods, filters, tests and global functions.</summary>
internal static class Builtins
{
    internal const string UndefinedMarker = "LlmBuild.Jinja.Undefined";

    public static readonly IReadOnlyDictionary<string, JinjaCallable> Globals = new Dictionary<string, JinjaCallable>
    {
        ["raise_exception"] = new("raise_exception", (args, _) =>
            throw new LlmBuildException(ErrorCodes.ChatTemplateRender,
                $"the chat template raised an exception: {(args.Count > 0 ? Py.Str(args[0]) : "")}")),
        ["namespace"] = new("namespace", (args, kwargs) =>
        {
            var ns = new JinjaNamespace();
            foreach (var a in args)
                if (a is OrderedDictionary<string, object?> d) foreach (var (k, v) in d) ns.Values[k] = v;
            foreach (var (k, v) in kwargs) ns.Values[k] = v;
            return ns;
        }),
        ["range"] = new("range", (args, _) =>
        {
            long start = 0, stop, step = 1;
            if (args.Count == 1) stop = Int(args[0], "range");
            else if (args.Count >= 2)
            {
                start = Int(args[0], "range");
                stop = Int(args[1], "range");
                if (args.Count > 2) step = Int(args[2], "range");
            }
            else throw Error(0, "range() needs at least one argument");
            if (step == 0) throw Error(0, "range() step must not be zero");
            // Count first, in 128 bits: the list must fit the output limit, and start + k·step never overflows.
            Int128 span = step > 0 ? (Int128)stop - start : (Int128)start - stop;
            Int128 magnitude = step > 0 ? step : -(Int128)step;
            Int128 count = span <= 0 ? 0 : (span + magnitude - 1) / magnitude;
            RenderBudget.Length(count > int.MaxValue ? long.MaxValue : (long)count, $"range({start}, {stop}, {step})");
            var list = new List<object?>((int)count);
            for (long k = 0; k < (long)count; k++) list.Add((long)(start + (Int128)k * step));
            RenderBudget.Step((long)count);
            return list;
        }),
        ["dict"] = new("dict", (args, kwargs) =>
        {
            var dict = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
            foreach (var a in args)
                if (a is OrderedDictionary<string, object?> d) foreach (var (k, v) in d) dict[k] = v;
            foreach (var (k, v) in kwargs) dict[k] = v;
            return dict;
        }),
    };

    private static long Int(object? v, string where) =>
        v is long or bool ? Py.ToLong(v) : throw Error(0, $"{where}: expected an integer, got a {Py.TypeName(v)}");

    internal static LlmBuildException Error(int line, string message) => JinjaTemplate.RenderError(line, message);

    private static LlmBuildException UndefinedError(int line, Undefined u, string what)
    {
        var e = Error(line, $"'{u.Name}' is undefined ({what})");
        e.Data[UndefinedMarker] = true;
        return e;
    }

    // ---- access ----

    public static object? GetAttr(object? target, string name, int line)
    {
        RenderBudget.Touch(target);
        switch (target)
        {
            case Undefined u:
                throw UndefinedError(line, u, $"has no attribute '{name}'");
            case OrderedDictionary<string, object?> dict:
                if (DictMethod(dict, name) is { } method) return method;
                return dict.TryGetValue(name, out var v) ? v : new Undefined(name);
            case JinjaNamespace ns:
                return ns.Values.TryGetValue(name, out var nv) ? nv : new Undefined(name);
            case LoopInfo loop:
                return loop.Get(name);
            case string s:
                return StringMethod(s, name, line) ?? (object)new Undefined(name);
            default:
                return new Undefined(name);
        }
    }

    public static object? GetItem(object? target, object? key, int line)
    {
        RenderBudget.Touch(target);
        switch (target)
        {
            case Undefined u:
                throw UndefinedError(line, u, $"cannot be indexed with {Py.Repr(key)}");
            case List<object?> list when key is long or bool:
                {
                    long i = Py.ToLong(key);
                    if (i < 0) i += list.Count;
                    return i >= 0 && i < list.Count ? list[(int)i] : new Undefined($"[{Py.Repr(key)}]");
                }
            case string s when key is long or bool:
                {
                    var runes = Py.Characters(s);
                    long i = Py.ToLong(key);
                    if (i < 0) i += runes.Count;
                    return i >= 0 && i < runes.Count ? runes[(int)i] : new Undefined($"[{Py.Repr(key)}]");
                }
            case OrderedDictionary<string, object?> dict:
                return dict.TryGetValue(key as string ?? Py.Str(key), out var v) ? v : new Undefined(Py.Str(key));
            default:
                return key is string name ? GetAttr(target, name, line) : new Undefined($"[{Py.Repr(key)}]");
        }
    }

    public static object? Slice(object? target, object? start, object? stop, object? step, int line)
    {
        List<object?> items;
        bool isString = false;
        switch (target)
        {
            case List<object?> list: items = list; break;
            case string s: items = Py.Characters(s); isString = true; break;
            case Undefined u: throw UndefinedError(line, u, "cannot be sliced");
            default: throw Error(line, $"a {Py.TypeName(target)} cannot be sliced");
        }
        int n = items.Count;
        long st = step is null ? 1 : Py.ToLong(step);
        if (st == 0) throw Error(line, "slice step cannot be zero");
        st = Math.Clamp(st, -(long)n - 1, (long)n + 1); // any longer stride takes the same one item, and i + st cannot overflow
        long Clamp(object? v, long dflt)
        {
            if (v is null) return dflt;
            long x = Py.ToLong(v);
            if (x < 0) x += n;
            return st > 0 ? Math.Clamp(x, 0, n) : Math.Clamp(x, -1, n - 1);
        }
        long a = Clamp(start, st > 0 ? 0 : n - 1);
        long b = Clamp(stop, st > 0 ? n : -1);
        var result = new List<object?>();
        for (long i = a; st > 0 ? i < b : i > b; i += st) result.Add(items[(int)i]);
        return isString ? string.Concat(result.Cast<string>()) : result;
    }

    private static JinjaCallable? DictMethod(OrderedDictionary<string, object?> dict, string name) => name switch
    {
        "items" => new JinjaCallable("items", (_, _) => dict.Select(p => (object?)new JinjaTuple([p.Key, p.Value])).ToList()),
        "keys" => new JinjaCallable("keys", (_, _) => dict.Keys.Cast<object?>().ToList()),
        "values" => new JinjaCallable("values", (_, _) => dict.Values.ToList()),
        "get" => new JinjaCallable("get", (args, _) =>
            args.Count > 0 && dict.TryGetValue(args[0] as string ?? Py.Str(args[0]), out var v) ? v : args.Count > 1 ? args[1] : null),
        _ => null,
    };

    private static JinjaCallable? StringMethod(string s, string name, int line)
    {
        if (StringMethodBody(s, name, line) is not { } body) return null;
        // The method may be called many times once bound; each call may read the whole string and its arguments.
        return new JinjaCallable(name, (args, kwargs) =>
        {
            RenderBudget.Touch(s);
            foreach (var a in args) RenderBudget.Touch(a);
            return body(args, kwargs);
        });
    }

    private static JinjaFunction? StringMethodBody(string s, string name, int line)
    {
        string? Chars(List<object?> args) => args.Count > 0 && args[0] is string c ? c : null;
        return name switch
        {
            "startswith" => (args, _) => args.Count > 0 && MatchesAffix(args[0], p => s.StartsWith(p, StringComparison.Ordinal), line),
            "endswith" => (args, _) => args.Count > 0 && MatchesAffix(args[0], p => s.EndsWith(p, StringComparison.Ordinal), line),
            "strip" => (args, _) => Chars(args) is { } c ? s.Trim(c.ToCharArray()) : s.Trim(),
            "lstrip" => (args, _) => Chars(args) is { } c ? s.TrimStart(c.ToCharArray()) : s.TrimStart(),
            "rstrip" => (args, _) => Chars(args) is { } c ? s.TrimEnd(c.ToCharArray()) : s.TrimEnd(),
            "upper" => (_, _) => s.ToUpperInvariant(),
            "lower" => (_, _) => s.ToLowerInvariant(),
            "title" => (_, _) => Title(s),
            "capitalize" => (_, _) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant(),
            "split" => (args, kwargs) => Split(s, args.Count > 0 ? args[0] : kwargs.GetValueOrDefault("sep"),
                args.Count > 1 ? args[1] : kwargs.GetValueOrDefault("maxsplit"), line),
            "splitlines" => (_, _) => s.Split('\n').Select(x => (object?)x.TrimEnd('\r')).ToList() is var l && s.EndsWith('\n') ? l.Take(l.Count - 1).ToList() : s.Length == 0 ? [] : l,
            "replace" => (args, _) => args.Count >= 2 && args[0] is string o && args[1] is string r
                ? Replace(s, o, r) : throw Error(line, "replace() needs two strings"),
            "find" => (args, _) => args.Count > 0 && args[0] is string f ? (long)Find(s, f) : throw Error(line, "find() needs a string"),
            "count" => (args, _) => args.Count > 0 && args[0] is string f && f.Length > 0 ? Occurrences(s, f) : throw Error(line, "count() needs a string"),
            "join" => (args, _) => args.Count > 0 && Py.Iterate(args[0]) is { } items ? Join(s, items) : throw Error(line, "join() needs an iterable"),
            "isdigit" => (_, _) => s.Length > 0 && s.All(char.IsDigit),
            "isalpha" => (_, _) => s.Length > 0 && s.All(char.IsLetter),
            "isspace" => (_, _) => s.Length > 0 && s.All(char.IsWhiteSpace),
            "format" => throw JinjaParser.Unsupport(line, "str.format()"),
            _ => null,
        };
    }

    /// <summary>The first index of <paramref name="needle"/>, charged as a substring search.</summary>
    private static int Find(string s, string needle, int from = 0)
    {
        RenderBudget.Search(s.Length - from, needle.Length);
        return s.IndexOf(needle, from, StringComparison.Ordinal);
    }

    /// <summary>Non-overlapping occurrences of a non-empty <paramref name="needle"/> (str.count).</summary>
    private static long Occurrences(string s, string needle)
    {
        RenderBudget.Search(s.Length, needle.Length);
        long count = 0;
        for (int i = s.IndexOf(needle, StringComparison.Ordinal); i >= 0; i = s.IndexOf(needle, i + needle.Length, StringComparison.Ordinal)) count++;
        return count;
    }

    private static bool MatchesAffix(object? arg, Func<string, bool> test, int line) => arg switch
    {
        string p => test(p),
        List<object?> options => options.Any(o => o is string p && test(p)),
        _ => throw Error(line, "startswith/endswith need a string or a tuple of strings"),
    };

    private static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool previousCased = false;
        foreach (char c in s)
        {
            sb.Append(previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            previousCased = char.IsLetter(c);
        }
        return sb.ToString();
    }

    /// <summary>str.replace, refused before it builds a string over the output limit.</summary>
    private static string Replace(string s, string old, string replacement)
    {
        if (old.Length == 0) return s;
        long count = Occurrences(s, old);
        RenderBudget.Length(s.Length + count * (replacement.Length - old.Length), "the replaced string");
        return s.Replace(old, replacement, StringComparison.Ordinal);
    }

    /// <summary>Joins the items' str() with a separator, refused before it builds a string over the output limit.</summary>
    private static string Join(string separator, List<object?> items)
    {
        var parts = items.Select(Py.Str).ToList();
        long length = (long)separator.Length * Math.Max(0, parts.Count - 1);
        foreach (string p in parts) length += p.Length;
        RenderBudget.Length(length, "the joined string");
        return string.Join(separator, parts);
    }

    /// <summary>A string repeated <paramref name="times"/> times (Python's <c>s * n</c>).</summary>
    private static string Repeat(string s, long times)
    {
        if (times <= 0 || s.Length == 0) return "";
        RenderBudget.Length(times > int.MaxValue ? long.MaxValue : s.Length * times, $"a string repeated {times} times");
        return new StringBuilder(s.Length * (int)times).Insert(0, s, (int)times).ToString();
    }

    /// <summary>A list repeated <paramref name="times"/> times (Python's <c>list * n</c>).</summary>
    private static List<object?> Repeat(List<object?> list, long times)
    {
        if (times <= 0 || list.Count == 0) return [];
        RenderBudget.Length(times > int.MaxValue ? long.MaxValue : list.Count * times, $"a list repeated {times} times");
        var result = new List<object?>(list.Count * (int)times);
        for (long i = 0; i < times; i++) result.AddRange(list);
        return result;
    }

    /// <summary>Spaces to pad with; a negative count is none, as in Python.</summary>
    private static string Spaces(long count, string what)
    {
        if (count <= 0) return "";
        RenderBudget.Length(count, what);
        return new string(' ', (int)count);
    }

    private static List<object?> Split(string s, object? sep, object? maxsplit, int line)
    {
        int max = maxsplit is null ? -1 : Py.ToInt(maxsplit, "split() maxsplit");
        if (sep is null)
        {
            var parts = new List<object?>();
            int i = 0;
            while (i < s.Length)
            {
                while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
                if (i >= s.Length) break;
                if (max >= 0 && parts.Count == max) { parts.Add(s[i..].TrimEnd()); break; }
                int start = i;
                while (i < s.Length && !char.IsWhiteSpace(s[i])) i++;
                parts.Add(s[start..i]);
            }
            return parts;
        }
        if (sep is not string separator || separator.Length == 0) throw Error(line, "split() separator must be a non-empty string");
        RenderBudget.Search(s.Length, separator.Length);
        var result = s.Split(separator, max >= 0 && max < int.MaxValue ? max + 1 : int.MaxValue, StringSplitOptions.None);
        return result.Select(x => (object?)x).ToList();
    }

    // ---- operators ----

    public static object? Binary(string op, object? a, object? b, int line)
    {
        RenderBudget.Touch(a);
        RenderBudget.Touch(b);
        if (op == "~") return Concat(Py.Str(a), Py.Str(b));
        if (a is Undefined ua) throw UndefinedError(line, ua, $"used with '{op}'");
        if (b is Undefined ub) throw UndefinedError(line, ub, $"used with '{op}'");
        switch (op)
        {
            case "+":
                if (a is string sa && b is string sb) return Concat(sa, sb);
                if (a is List<object?> la && b is List<object?> lb)
                {
                    RenderBudget.Length((long)la.Count + lb.Count, "the concatenated list");
                    return la.Concat(lb).ToList();
                }
                break;
            case "*":
                if (a is string rs && b is long or bool) return Repeat(rs, Py.ToLong(b));
                if (a is List<object?> rl && b is long or bool) return Repeat(rl, Py.ToLong(b));
                break;
        }
        if (Py.IsNumber(a) && Py.IsNumber(b))
        {
            bool isFloat = a is double || b is double;
            if (!isFloat) return IntegerArithmetic(op, Py.ToLong(a), Py.ToLong(b), line);
            double x = Py.ToDouble(a), y = Py.ToDouble(b);
            switch (op)
            {
                case "+": return x + y;
                case "-": return x - y;
                case "*": return x * y;
                case "/":
                    if (y == 0) throw Error(line, "division by zero");
                    return x / y;
                case "//":
                    if (y == 0) throw Error(line, "division by zero");
                    return Math.Floor(x / y);
                case "%":
                    if (y == 0) throw Error(line, "modulo by zero");
                    return x - y * Math.Floor(x / y);
                case "**":
                    return Math.Pow(x, y);
            }
        }
        if (op == "%" && a is string)
            throw JinjaParser.Unsupport(line, "'%' string formatting");
        throw Error(line, $"unsupported operand types for {op}: {Py.TypeName(a)} and {Py.TypeName(b)}");
    }

    private static string Concat(string a, string b)
    {
        RenderBudget.Length((long)a.Length + b.Length, "the concatenated string");
        return a + b;
    }

    /// <summary>Python's int arithmetic on 64-bit integers: a result that does not fit is
    /// <see cref="ErrorCodes.TemplateIntegerOverflow"/>, never a wrapped or clamped value.</summary>
    private static object IntegerArithmetic(string op, long x, long y, int line)
    {
        try
        {
            switch (op)
            {
                case "+": return checked(x + y);
                case "-": return checked(x - y);
                case "*": return checked(x * y);
                case "/":
                    if (y == 0) throw Error(line, "division by zero");
                    return (double)x / y;
                case "//":
                    {
                        if (y == 0) throw Error(line, "division by zero");
                        long q = checked(x / y); // long.MinValue // -1 overflows
                        return (x % y != 0) && ((x < 0) != (y < 0)) ? q - 1 : q;
                    }
                case "%":
                    {
                        if (y == 0) throw Error(line, "modulo by zero");
                        if (y == -1) return 0L; // long.MinValue % -1 throws in .NET; the result is 0 for every x
                        long r = x % y;
                        return r != 0 && (r < 0) != (y < 0) ? r + y : r;
                    }
                case "**":
                    return y < 0 ? Math.Pow(x, y) : (object)Power(x, y);
            }
        }
        catch (OverflowException)
        {
            throw IntegerOverflow(line, $"{x} {op} {y}");
        }
        throw Error(line, $"unsupported operator {op}");
    }

    /// <summary>x ** y for y ≥ 0 by repeated squaring, checked: 10 ** 100000 overflows after a few squarings.</summary>
    private static long Power(long x, long y)
    {
        long result = 1;
        while (y > 0)
        {
            if ((y & 1) != 0) result = checked(result * x);
            y >>= 1;
            if (y > 0) x = checked(x * x);
        }
        return result;
    }

    internal static long Negate(long x, int line) =>
        x != long.MinValue ? -x : throw IntegerOverflow(line, $"-({x})");

    private static LlmBuildException IntegerOverflow(int line, string expression) =>
        JinjaTemplate.Error(ErrorCodes.TemplateIntegerOverflow, line,
            $"{expression} overflows 64-bit integers (LlmBuild's templates compute with 64-bit integers, not Python's unbounded ones)");

    public static bool Compare(string op, object? a, object? b, int line)
    {
        RenderBudget.Touch(a);
        RenderBudget.Touch(b);
        switch (op)
        {
            case "==": return Py.Equals(a, b);
            case "!=": return !Py.Equals(a, b);
            case "in": return Contains(b, a, line);
            case "notin": return !Contains(b, a, line);
        }
        if (a is Undefined ua) throw UndefinedError(line, ua, $"compared with '{op}'");
        if (b is Undefined ub) throw UndefinedError(line, ub, $"compared with '{op}'");
        int c = Py.Compare(a, b) ?? throw Error(line, $"'{op}' is not supported between a {Py.TypeName(a)} and a {Py.TypeName(b)}");
        return op switch { "<" => c < 0, ">" => c > 0, "<=" => c <= 0, ">=" => c >= 0, _ => throw Error(line, op) };
    }

    private static bool Contains(object? container, object? item, int line) => container switch
    {
        string s => item is string sub ? Find(s, sub) >= 0 : throw Error(line, $"'in <string>' requires a string, not a {Py.TypeName(item)}"),
        List<object?> list => list.Any(x => Py.Equals(x, item)),
        OrderedDictionary<string, object?> dict => item is string k && dict.ContainsKey(k),
        JinjaNamespace ns => item is string k && ns.Values.ContainsKey(k),
        Undefined u => throw UndefinedError(line, u, "used with 'in'"),
        _ => throw Error(line, $"a {Py.TypeName(container)} does not support 'in'"),
    };

    // ---- tests ----

    public static bool Test(string name, object? v, List<object?> args, int line)
    {
        RenderBudget.Touch(v);
        foreach (var a in args) RenderBudget.Touch(a);
        return TestValue(name, v, args, line);
    }

    private static bool TestValue(string name, object? v, List<object?> args, int line) => name switch
    {
        "defined" => v is not Undefined,
        "undefined" => v is Undefined,
        "none" => v is null,
        "string" => v is string,
        "number" => v is long or double,
        "integer" => v is long,
        "float" => v is double,
        "boolean" => v is bool,
        "true" => v is true,
        "false" => v is false,
        "mapping" => v is OrderedDictionary<string, object?> or JinjaNamespace,
        "iterable" => v is string or List<object?> or OrderedDictionary<string, object?>,
        "sequence" => v is string or List<object?> or OrderedDictionary<string, object?>,
        "callable" => v is JinjaCallable,
        "lower" => v is string s && s == s.ToLowerInvariant(),
        "upper" => v is string s && s == s.ToUpperInvariant(),
        "even" => v is long l && l % 2 == 0,
        "odd" => v is long l && l % 2 != 0,
        "divisibleby" => v is long l && args.Count == 1 && args[0] is long d && d != 0 && l % d == 0,
        "eq" or "equalto" or "==" => args.Count == 1 && Py.Equals(v, args[0]),
        "ne" or "!=" => args.Count == 1 && !Py.Equals(v, args[0]),
        "lt" or "lessthan" => args.Count == 1 && Compare("<", v, args[0], line),
        "gt" or "greaterthan" => args.Count == 1 && Compare(">", v, args[0], line),
        "le" => args.Count == 1 && Compare("<=", v, args[0], line),
        "ge" => args.Count == 1 && Compare(">=", v, args[0], line),
        "in" => args.Count == 1 && Contains(args[0], v, line),
        "sameas" => args.Count == 1 && (ReferenceEquals(v, args[0]) || (v is null && args[0] is null) || (v is bool b && args[0] is bool c && b == c)),
        _ => throw JinjaParser.Unsupport(line, $"the test 'is {name}'"),
    };

    // ---- filters ----

    public static object? Filter(string name, object? v, List<object?> args, Dictionary<string, object?> kwargs, int line)
    {
        RenderBudget.Touch(v);
        foreach (var a in args) RenderBudget.Touch(a);
        object? Arg(int i, string key, object? dflt = null) => i < args.Count ? args[i] : kwargs.TryGetValue(key, out var x) ? x : dflt;
        switch (name)
        {
            case "trim":
            case "strip":
                {
                    string s = Py.Str(v);
                    return Arg(0, "chars") is string chars ? s.Trim(chars.ToCharArray()) : s.Trim();
                }
            case "tojson":
                {
                    object? indent = Arg(0, "indent");
                    return PyJson.Dumps(v, indent is null ? null : Py.ToInt(indent, "tojson indent"), Py.Truthy(kwargs.GetValueOrDefault("sort_keys")), line);
                }
            case "length":
            case "count":
                {
                    int n = Py.Length(v);
                    return n >= 0 ? (long)n : throw Error(line, $"a {Py.TypeName(v)} has no length");
                }
            case "first":
                {
                    var items = Items(v, line);
                    return items.Count > 0 ? items[0] : new Undefined("first");
                }
            case "last":
                {
                    var items = Items(v, line);
                    return items.Count > 0 ? items[^1] : new Undefined("last");
                }
            case "join":
                {
                    string sep = Py.Str(Arg(0, "d", ""));
                    var items = Items(v, line);
                    if (Arg(1, "attribute") is string attr) items = items.Select(x => GetAttrPath(x, attr, line)).ToList();
                    return Join(sep, items);
                }
            case "upper": return Py.Str(v).ToUpperInvariant();
            case "lower": return Py.Str(v).ToLowerInvariant();
            case "title": return Title(Py.Str(v));
            case "capitalize":
                {
                    string s = Py.Str(v);
                    return s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();
                }
            case "replace":
                {
                    string s = Py.Str(v), old = Py.Str(Arg(0, "old")), replacement = Py.Str(Arg(1, "new"));
                    return Replace(s, old, replacement);
                }
            case "default":
            case "d":
                {
                    bool boolean = Py.Truthy(Arg(1, "boolean", false));
                    bool useDefault = v is Undefined || (boolean && !Py.Truthy(v));
                    return useDefault ? Arg(0, "default_value", "") : v;
                }
            case "list": return Items(v, line).ToList();
            case "string": return Py.Str(v);
            case "safe": return v;
            case "int":
                return v switch
                {
                    long l => l,
                    bool b => b ? 1L : 0L,
                    double d => Py.FloatToLong(d),
                    string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long p) => p,
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double p) => Py.FloatToLong(p),
                    _ => Arg(0, "default", 0L),
                };
            case "float":
                return v switch
                {
                    long or double or bool => Py.ToDouble(v),
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double p) => p,
                    _ => Arg(0, "default", 0.0),
                };
            case "abs":
                return v switch { long l => (object)(l < 0 ? Negate(l, line) : l), double d => Math.Abs(d), _ => throw Error(line, $"abs of a {Py.TypeName(v)}") };
            case "round":
                {
                    int precision = Py.ToInt(Arg(0, "precision", 0L), "round() precision");
                    string method = Py.Str(Arg(1, "method", "common"));
                    double x = Py.ToDouble(v) * Math.Pow(10, precision);
                    x = method switch { "ceil" => Math.Ceiling(x), "floor" => Math.Floor(x), _ => Math.Round(x, MidpointRounding.AwayFromZero) };
                    return x / Math.Pow(10, precision);
                }
            case "items":
                return v is OrderedDictionary<string, object?> dict
                    ? dict.Select(p => (object?)new JinjaTuple([p.Key, p.Value])).ToList()
                    : v is Undefined ? new List<object?>() : throw Error(line, $"items of a {Py.TypeName(v)}");
            case "dictsort":
                return v is OrderedDictionary<string, object?> ds
                    ? ds.OrderBy(p => p.Key, StringComparer.OrdinalIgnoreCase).Select(p => (object?)new JinjaTuple([p.Key, p.Value])).ToList()
                    : throw Error(line, $"dictsort of a {Py.TypeName(v)}");
            case "reverse":
                if (v is string rs) return string.Concat(rs.EnumerateRunes().Reverse().Select(r => r.ToString()));
                return Items(v, line).AsEnumerable().Reverse().ToList();
            case "sort":
                {
                    var items = Items(v, line).ToList();
                    bool reverse = Py.Truthy(Arg(0, "reverse", false));
                    string? attr = Arg(2, "attribute") as string;
                    Comparison<object?> cmp = (x, y) =>
                    {
                        object? kx = attr is null ? x : GetAttrPath(x, attr, line), ky = attr is null ? y : GetAttrPath(y, attr, line);
                        if (kx is string sx && ky is string sy && !Py.Truthy(Arg(1, "case_sensitive", false)))
                        {
                            RenderBudget.Touch(sx);
                            RenderBudget.Touch(sy);
                            return string.Compare(sx.ToLowerInvariant(), sy.ToLowerInvariant(), StringComparison.Ordinal);
                        }
                        return Py.Compare(kx, ky) ?? throw Error(line, $"cannot sort a {Py.TypeName(kx)} and a {Py.TypeName(ky)}");
                    };
                    List<object?> sorted;
                    try
                    {
                        sorted = items.Select((x, i) => (x, i)).OrderBy(p => p.x, Comparer<object?>.Create(cmp)).ThenBy(p => p.i).Select(p => p.x).ToList();
                    }
                    catch (InvalidOperationException e) when (e.InnerException is LlmBuildException inner)
                    {
                        // The sort wraps what the comparison threw (a type error, a limit); the template's error is the inner one.
                        System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(inner);
                        throw;
                    }
                    if (reverse) sorted.Reverse();
                    return sorted;
                }
            case "unique":
                {
                    var result = new List<object?>();
                    foreach (var x in Items(v, line)) if (!result.Any(y => Py.Equals(x, y))) result.Add(x); // each Equals is charged
                    return result;
                }
            case "min":
            case "max":
                {
                    var items = Items(v, line);
                    if (items.Count == 0) return new Undefined(name);
                    object? best = items[0];
                    foreach (var x in items.Skip(1))
                    {
                        int c = Py.Compare(x, best) ?? throw Error(line, $"cannot compare a {Py.TypeName(x)} and a {Py.TypeName(best)}");
                        if (name == "min" ? c < 0 : c > 0) best = x;
                    }
                    return best;
                }
            case "sum":
                {
                    object? total = Arg(1, "start", 0L);
                    foreach (var x in Items(v, line))
                        total = Binary("+", total, Arg(0, "attribute") is string a ? GetAttrPath(x, a, line) : x, line);
                    return total;
                }
            case "map":
                {
                    var items = Items(v, line);
                    if (kwargs.TryGetValue("attribute", out var attribute))
                    {
                        string path = Py.Str(attribute);
                        return items.Select(x =>
                        {
                            object? r = GetAttrPath(x, path, line);
                            return r is Undefined && kwargs.TryGetValue("default", out var d) ? d : r;
                        }).ToList();
                    }
                    if (args.Count == 0) throw Error(line, "map needs a filter name or attribute=");
                    string filter = Py.Str(args[0]);
                    var rest = args.Skip(1).ToList();
                    return items.Select(x => Filter(filter, x, rest, [], line)).ToList();
                }
            case "select":
            case "reject":
                {
                    bool keep = name == "select";
                    var items = Items(v, line);
                    if (args.Count == 0) return items.Where(x => Py.Truthy(x) == keep).ToList();
                    string test = Py.Str(args[0]);
                    var rest = args.Skip(1).ToList();
                    return items.Where(x => Test(test, x, rest, line) == keep).ToList();
                }
            case "selectattr":
            case "rejectattr":
                {
                    bool keep = name == "selectattr";
                    var items = Items(v, line);
                    string attr = Py.Str(Arg(0, "attribute"));
                    return items.Where(x =>
                    {
                        object? value = GetAttrPath(x, attr, line);
                        bool passed = args.Count > 1 ? Test(Py.Str(args[1]), value, args.Skip(2).ToList(), line) : Py.Truthy(value);
                        return passed == keep;
                    }).ToList();
                }
            case "attr":
                return GetAttr(v, Py.Str(Arg(0, "name")), line);
            case "indent":
                {
                    string s = Py.Str(v);
                    object? width = Arg(0, "width", 4L);
                    string pad = width is string w ? w : Spaces(Py.ToLong(width), "the indent");
                    bool first = Py.Truthy(Arg(1, "first", false)), blank = Py.Truthy(Arg(2, "blank", false));
                    var lines = s.Split('\n');
                    RenderBudget.Length(s.Length + (long)pad.Length * lines.Length, "the indented string");
                    for (int i = 0; i < lines.Length; i++)
                    {
                        if (i == 0 && !first) continue;
                        if (lines[i].Length == 0 && !blank) continue;
                        lines[i] = pad + lines[i];
                    }
                    return string.Join('\n', lines);
                }
            case "wordcount":
                return (long)Split(Py.Str(v), null, null, line).Count;
            case "center":
                {
                    string s = Py.Str(v);
                    long width = Py.ToLong(Arg(0, "width", 80L));
                    if (s.Length >= width) return s;
                    RenderBudget.Length(width, "the centered string");
                    long left = (width - s.Length) / 2;
                    return Spaces(left, "the centered string") + s + Spaces(width - s.Length - left, "the centered string");
                }
            case "escape":
            case "e":
                return Py.Str(v).Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;");
            default:
                throw JinjaParser.Unsupport(line, $"the filter '|{name}'");
        }
    }

    private static List<object?> Items(object? v, int line) =>
        Py.Iterate(v) ?? throw Error(line, $"a {Py.TypeName(v)} is not iterable");

    private static object? GetAttrPath(object? v, string path, int line)
    {
        foreach (string part in path.Split('.'))
        {
            if (v is Undefined) return v;
            v = long.TryParse(part, out long index) ? GetItem(v, index, line) : GetItem(v, part, line);
        }
        return v;
    }
}
