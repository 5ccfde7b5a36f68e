using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>A storage referenced by a torch pickle's persistent id: ('storage', &lt;dtype&gt;Storage, key, location, numel).</summary>
internal sealed record PickledStorage(TensorDType DType, string Key, long ElementCount);

/// <summary>A tensor rebuilt by torch._utils._rebuild_tensor_v2: a view (offset, shape, strides in elements) of a storage.</summary>
internal sealed record PickledTensor(PickledStorage Storage, long Offset, long[] Shape, long[] Stride);

/// <summary>
/// A pickle interpreter for torch state dicts that executes nothing. It models the opcodes a state dict uses
/// (protocols 2–5) and accepts exactly these globals: collections.OrderedDict, torch._utils._rebuild_tensor_v2 /
/// _rebuild_tensor / _rebuild_parameter, and torch's typed storage classes. Any other global is a coded error
/// before anything is built; a REDUCE is only ever applied to one of those allowed callables, interpreted here.
/// </summary>
internal sealed class RestrictedUnpickler
{
    private static readonly Dictionary<string, TensorDType> Storages = new(StringComparer.Ordinal)
    {
        ["FloatStorage"] = TensorDType.F32, ["HalfStorage"] = TensorDType.F16, ["BFloat16Storage"] = TensorDType.BF16,
        ["DoubleStorage"] = TensorDType.F64, ["LongStorage"] = TensorDType.I64, ["IntStorage"] = TensorDType.I32,
        ["ShortStorage"] = TensorDType.I16, ["CharStorage"] = TensorDType.I8, ["ByteStorage"] = TensorDType.U8,
        ["BoolStorage"] = TensorDType.Bool, ["Float8_e4m3fnStorage"] = TensorDType.F8E4M3, ["Float8_e5m2Storage"] = TensorDType.F8E5M2,
    };

    private static readonly HashSet<string> Callables = new(StringComparer.Ordinal)
    {
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor", "torch._utils._rebuild_parameter",
    };

    private sealed record Global(string Module, string Name)
    {
        public string FullName => Module + "." + Name;
    }

    /// <summary>A dict in insertion order (an OrderedDict or a plain dict).</summary>
    internal sealed class Dict
    {
        public List<KeyValuePair<object?, object?>> Items { get; } = [];
    }

    private sealed class Mark;

    private readonly byte[] _data;
    private readonly string _where;
    private int _pos;
    private readonly List<object?> _stack = [];
    private readonly List<int> _marks = [];
    private readonly Dictionary<long, object?> _memo = [];

    private RestrictedUnpickler(byte[] data, string where)
    {
        _data = data;
        _where = where;
    }

    /// <summary>Loads a pickled state dict: every (name, tensor) pair, in order. Non-tensor values are skipped.</summary>
    public static List<KeyValuePair<string, PickledTensor>> LoadStateDict(byte[] pickle, string where)
    {
        object? root = new RestrictedUnpickler(pickle, where).Run();
        if (root is not Dict dict)
            throw new LlmBuildException(ErrorCodes.BadTorchCheckpoint, $"'{where}' does not hold a state dict (its pickle's top object is {Describe(root)}).", where);
        var result = new List<KeyValuePair<string, PickledTensor>>();
        foreach (var (k, v) in dict.Items)
            if (k is string name && v is PickledTensor t) result.Add(new(name, t));
        return result;
    }

    private object? Run()
    {
        while (true)
        {
            byte op = Byte();
            switch (op)
            {
                case 0x80: Byte(); break; // PROTO
                case 0x95: Bytes(8); break; // FRAME
                case 0x2E: return Pop(); // STOP
                case 0x28: _marks.Add(_stack.Count); break; // MARK
                case 0x7D: Push(new Dict()); break; // EMPTY_DICT
                case 0x5D: Push(new List<object?>()); break; // EMPTY_LIST
                case 0x29: Push(Array.Empty<object?>()); break; // EMPTY_TUPLE
                case 0x74: Push(PopMark().ToArray()); break; // TUPLE
                case 0x85: { var a = Pop(); Push(new[] { a }); break; }
                case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; }
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; }
                case 0x71: _memo[Byte()] = Peek(); break; // BINPUT
                case 0x72: _memo[BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4))] = Peek(); break; // LONG_BINPUT
                case 0x94: _memo[_memo.Count] = Peek(); break; // MEMOIZE
                case 0x68: Push(Memo(Byte())); break; // BINGET
                case 0x6A: Push(Memo(BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4)))); break; // LONG_BINGET
                case 0x63: Push(CheckGlobal(Line(), Line())); break; // GLOBAL
                case 0x93: { var name = Pop() as string; var module = Pop() as string; Push(CheckGlobal(module ?? throw Bad("STACK_GLOBAL without a module name"), name ?? throw Bad("STACK_GLOBAL without a name"))); break; }
                case 0x58: Push(Utf8(BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4)))); break; // BINUNICODE
                case 0x8C: Push(Utf8(Byte())); break; // SHORT_BINUNICODE
                case 0x8D: Push(Utf8(checked((long)BinaryPrimitives.ReadUInt64LittleEndian(Bytes(8))))); break; // BINUNICODE8
                case 0x55: Push(Encoding.Latin1.GetString(Bytes(Byte()))); break; // SHORT_BINSTRING
                case 0x54: Push(Encoding.Latin1.GetString(Bytes(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4)))))); break; // BINSTRING
                case 0x43: Push(Bytes(Byte()).ToArray()); break; // SHORT_BINBYTES
                case 0x42: Push(Bytes(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4)))).ToArray()); break; // BINBYTES
                case 0x4A: Push((long)BinaryPrimitives.ReadInt32LittleEndian(Bytes(4))); break; // BININT
                case 0x4B: Push((long)Byte()); break; // BININT1
                case 0x4D: Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Bytes(2))); break; // BININT2
                case 0x8A: Push(Long(Byte())); break; // LONG1
                case 0x8B: Push(Long(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4))))); break; // LONG4
                case 0x88: Push(true); break;
                case 0x89: Push(false); break;
                case 0x4E: Push(null); break;
                case 0x47: Push(BinaryPrimitives.ReadDoubleBigEndian(Bytes(8))); break; // BINFLOAT
                case 0x52: { var args = Pop(); var f = Pop(); Push(Call(f, args)); break; } // REDUCE
                case 0x81: { var args = Pop(); var cls = Pop(); Push(Call(cls, args)); break; } // NEWOBJ
                case 0x62: { Pop(); if (Peek() is not (Dict or PickledTensor)) throw Bad($"BUILD on {Describe(Peek())}"); break; } // BUILD: state (e.g. _metadata) ignored
                case 0x73: { var v = Pop(); var k = Pop(); AsDict(Peek()).Items.Add(new(k, v)); break; } // SETITEM
                case 0x75: // SETITEMS
                {
                    var items = PopMark();
                    if (items.Count % 2 != 0) throw Bad("SETITEMS with an odd number of items");
                    var d = AsDict(Peek());
                    for (int i = 0; i < items.Count; i += 2) d.Items.Add(new(items[i], items[i + 1]));
                    break;
                }
                case 0x61: { var v = Pop(); AsList(Peek()).Add(v); break; } // APPEND
                case 0x65: { var items = PopMark(); AsList(Peek()).AddRange(items); break; } // APPENDS
                case 0x64: // DICT
                {
                    var items = PopMark();
                    var d = new Dict();
                    for (int i = 0; i + 1 < items.Count; i += 2) d.Items.Add(new(items[i], items[i + 1]));
                    Push(d);
                    break;
                }
                case 0x6C: Push(PopMark()); break; // LIST
                case 0x51: Push(PersistentLoad(Pop())); break; // BINPERSID
                default: throw Bad($"pickle opcode 0x{op:X2} at byte {_pos - 1} is not one a torch state dict uses");
            }
        }
    }

    private Global CheckGlobal(string module, string name)
    {
        var g = new Global(module, name);
        if (Callables.Contains(g.FullName) || (module == "torch" && Storages.ContainsKey(name))) return g;
        throw new LlmBuildException(ErrorCodes.ForbiddenPickleGlobal,
            $"'{_where}' refers to the Python global '{g.FullName}', which a plain state dict never needs; nothing was executed. " +
            "Only torch tensor-rebuild functions, storages and collections.OrderedDict are accepted. Convert the checkpoint to safetensors with a trusted tool.", _where);
    }

    private object? Call(object? callable, object? args)
    {
        if (callable is not Global g) throw Bad($"REDUCE on {Describe(callable)}");
        if (args is not object?[] a) throw Bad($"REDUCE of {g.FullName} without an argument tuple");
        switch (g.FullName)
        {
            case "collections.OrderedDict":
                return new Dict();
            case "torch._utils._rebuild_tensor_v2":
            case "torch._utils._rebuild_tensor":
                if (a.Length < 4 || a[0] is not PickledStorage storage || a[1] is not long offset)
                    throw Bad($"{g.FullName} called with unexpected arguments");
                return new PickledTensor(storage, offset, Longs(a[2], "size"), Longs(a[3], "stride"));
            case "torch._utils._rebuild_parameter":
                return a.Length >= 1 && a[0] is PickledTensor t ? t : throw Bad("_rebuild_parameter without a tensor");
            default:
                throw Bad($"{g.FullName} is a storage type, not a callable");
        }
    }

    private PickledStorage PersistentLoad(object? pid)
    {
        if (pid is not object?[] { Length: >= 5 } t || t[0] is not "storage" || t[1] is not Global type || t[2] is not string key || t[4] is not long numel)
            throw Bad($"persistent id {Describe(pid)} is not ('storage', type, key, location, numel)");
        if (type.Module != "torch" || !Storages.TryGetValue(type.Name, out var dtype))
            throw Bad($"storage type {type.FullName} is not supported");
        return new PickledStorage(dtype, key, numel);
    }

    private long[] Longs(object? o, string what)
    {
        if (o is not object?[] items) throw Bad($"tensor {what} is not a tuple");
        var result = new long[items.Length];
        for (int i = 0; i < items.Length; i++)
            result[i] = items[i] is long v && v >= 0 ? v : throw Bad($"tensor {what} holds {Describe(items[i])}");
        return result;
    }

    private object? Long(int length)
    {
        var bytes = Bytes(length);
        var value = new BigInteger(bytes, isUnsigned: false, isBigEndian: false);
        return value >= long.MinValue && value <= long.MaxValue ? (long)value : throw Bad("an integer too large for 64 bits");
    }

    private Dict AsDict(object? o) => o as Dict ?? throw Bad($"SETITEM on {Describe(o)}");
    private List<object?> AsList(object? o) => o as List<object?> ?? throw Bad($"APPEND on {Describe(o)}");

    private object? Memo(long index) => _memo.TryGetValue(index, out var v) ? v : throw Bad($"memo entry {index} is used before it is set");

    private void Push(object? o) => _stack.Add(o);

    private object? Peek() => _stack.Count > (_marks.Count > 0 ? _marks[^1] : 0) ? _stack[^1] : throw Bad("stack underflow");

    private object? Pop()
    {
        object? o = Peek();
        _stack.RemoveAt(_stack.Count - 1);
        return o;
    }

    private List<object?> PopMark()
    {
        if (_marks.Count == 0) throw Bad("a MARK is missing");
        int at = _marks[^1];
        _marks.RemoveAt(_marks.Count - 1);
        var items = _stack.GetRange(at, _stack.Count - at);
        _stack.RemoveRange(at, _stack.Count - at);
        return items;
    }

    private byte Byte() => _pos < _data.Length ? _data[_pos++] : throw Bad("the pickle ends early (no STOP)");

    private ReadOnlySpan<byte> Bytes(long n)
    {
        if (n < 0 || _pos + n > _data.Length) throw Bad("the pickle ends early");
        var s = _data.AsSpan(_pos, (int)n);
        _pos += (int)n;
        return s;
    }

    private string Utf8(long n) => Encoding.UTF8.GetString(Bytes(n));

    private string Line()
    {
        int end = Array.IndexOf(_data, (byte)'\n', _pos);
        if (end < 0) throw Bad("GLOBAL without a newline");
        string s = Encoding.ASCII.GetString(_data, _pos, end - _pos);
        _pos = end + 1;
        return s;
    }

    private static string Describe(object? o) => o switch
    {
        null => "None",
        string s => $"'{s}'",
        Global g => g.FullName,
        object?[] t => $"a tuple of {t.Length}",
        _ => o.GetType().Name,
    };

    private LlmBuildException Bad(string what) =>
        new(ErrorCodes.BadTorchCheckpoint, $"'{_where}' holds a pickle LlmBuild cannot read: {what}. Convert the checkpoint to safetensors.", _where);
}
