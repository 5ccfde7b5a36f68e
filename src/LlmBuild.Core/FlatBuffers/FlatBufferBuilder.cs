using System.Buffers.Binary;
using System.Text;

namespace LlmBuild.Core.FlatBuffers;

/// <summary>
/// A minimal FlatBuffers builder (the wire format of the FlatBuffers specification: little-endian, built back to
/// front so every uoffset points forward). Supports tables with vtables (default-valued scalars elided, identical
/// vtables shared), inline structs, vectors of scalars, structs and offsets, and strings. Offsets returned by the
/// Create/End methods are distances from the end of the buffer, as in the reference implementations.
/// </summary>
public sealed class FlatBufferBuilder
{
    private byte[] _buf;
    private int _space;             // index of the first used byte; data lives in _buf[_space..]
    private int _minAlign = 1;
    private int[] _vtable = new int[16];
    private int _vtableFields = -1; // -1: not inside a table
    private int _objectStart;
    private readonly List<int> _vtables = new();
    private bool _inVector;
    private int _vectorCount;

    public FlatBufferBuilder(int initialCapacity = 1024)
    {
        _buf = new byte[Math.Max(16, initialCapacity)];
        _space = _buf.Length;
    }

    /// <summary>Bytes written so far (the offset of the most recently written object).</summary>
    public int Offset => _buf.Length - _space;

    private void Grow(int needed)
    {
        int used = _buf.Length - _space;
        long size = Math.Max((long)_buf.Length * 2, (long)used + needed + 16);
        if (size > Array.MaxLength) throw new InvalidOperationException("A flatbuffer cannot exceed 2 GiB.");
        var bigger = new byte[size];
        Buffer.BlockCopy(_buf, _space, bigger, (int)size - used, used);
        _buf = bigger;
        _space = (int)size - used;
    }

    private void Pad(int n)
    {
        for (int i = 0; i < n; i++) _buf[--_space] = 0;
    }

    /// <summary>Makes room for <paramref name="additional"/> bytes and pads so that, once they are written, the
    /// head is aligned to <paramref name="size"/>.</summary>
    public void Prep(int size, int additional)
    {
        if (size > _minAlign) _minAlign = size;
        int alignSize = (-(Offset + additional)) & (size - 1);
        if (_space < alignSize + size + additional) Grow(alignSize + size + additional);
        Pad(alignSize);
    }

    private Span<byte> Take(int n)
    {
        _space -= n;
        return _buf.AsSpan(_space, n);
    }

    public void AddByte(byte v) { Prep(1, 0); Take(1)[0] = v; }
    public void AddInt16(short v) { Prep(2, 0); BinaryPrimitives.WriteInt16LittleEndian(Take(2), v); }
    public void AddUInt16(ushort v) { Prep(2, 0); BinaryPrimitives.WriteUInt16LittleEndian(Take(2), v); }
    public void AddInt32(int v) { Prep(4, 0); BinaryPrimitives.WriteInt32LittleEndian(Take(4), v); }
    public void AddUInt32(uint v) { Prep(4, 0); BinaryPrimitives.WriteUInt32LittleEndian(Take(4), v); }
    public void AddInt64(long v) { Prep(8, 0); BinaryPrimitives.WriteInt64LittleEndian(Take(8), v); }
    public void AddUInt64(ulong v) { Prep(8, 0); BinaryPrimitives.WriteUInt64LittleEndian(Take(8), v); }
    public void AddFloat(float v) { Prep(4, 0); BinaryPrimitives.WriteSingleLittleEndian(Take(4), v); }

    /// <summary>Writes a uoffset to an object written earlier (at a higher address).</summary>
    public void AddOffset(int offset)
    {
        Prep(4, 0);
        if (offset <= 0 || offset > Offset) throw new ArgumentOutOfRangeException(nameof(offset), "The offset must refer to an object already in this buffer.");
        int relative = Offset - offset + 4; // measured from where the uoffset itself will sit
        BinaryPrimitives.WriteInt32LittleEndian(Take(4), relative);
    }

    // ---- strings and vectors ----

    public int CreateString(string s)
    {
        NotNested();
        byte[] utf8 = Encoding.UTF8.GetBytes(s);
        Prep(4, utf8.Length + 1);
        Take(1)[0] = 0;
        utf8.CopyTo(Take(utf8.Length));
        BinaryPrimitives.WriteInt32LittleEndian(Take(4), utf8.Length);
        return Offset;
    }

    /// <summary>Starts a vector of <paramref name="count"/> elements of <paramref name="elementSize"/> bytes; the
    /// elements must then be added last to first.</summary>
    public void StartVector(int elementSize, int count, int alignment)
    {
        NotNested();
        _inVector = true;
        _vectorCount = count;
        Prep(4, elementSize * count);
        Prep(alignment, elementSize * count);
    }

    public int EndVector()
    {
        if (!_inVector) throw new InvalidOperationException("EndVector without StartVector.");
        _inVector = false;
        BinaryPrimitives.WriteInt32LittleEndian(Take(4), _vectorCount); // already aligned by StartVector
        return Offset;
    }

    public int CreateVector(ReadOnlySpan<byte> values)
    {
        StartVector(1, values.Length, 1);
        values.CopyTo(Take(values.Length));
        return EndVector();
    }

    public int CreateVector(ReadOnlySpan<int> values)
    {
        StartVector(4, values.Length, 4);
        for (int i = values.Length - 1; i >= 0; i--) AddInt32(values[i]);
        return EndVector();
    }

    public int CreateVector(ReadOnlySpan<ulong> values)
    {
        StartVector(8, values.Length, 8);
        for (int i = values.Length - 1; i >= 0; i--) AddUInt64(values[i]);
        return EndVector();
    }

    /// <summary>A vector of uoffsets to tables or strings created earlier.</summary>
    public int CreateOffsetVector(ReadOnlySpan<int> offsets)
    {
        StartVector(4, offsets.Length, 4);
        for (int i = offsets.Length - 1; i >= 0; i--) AddOffset(offsets[i]);
        return EndVector();
    }

    /// <summary>A vector of structs made of two uint64 fields (such as bmodel's <c>Binary</c>).</summary>
    public int CreateStructVector(ReadOnlySpan<(ulong First, ulong Second)> values)
    {
        StartVector(16, values.Length, 8);
        for (int i = values.Length - 1; i >= 0; i--)
        {
            AddUInt64(values[i].Second);
            AddUInt64(values[i].First);
        }
        return EndVector();
    }

    // ---- tables ----

    public void StartTable(int fieldCount)
    {
        NotNested();
        if (_vtable.Length < fieldCount) _vtable = new int[Math.Max(fieldCount, _vtable.Length * 2)];
        Array.Clear(_vtable, 0, fieldCount);
        _vtableFields = fieldCount;
        _objectStart = Offset;
    }

    private void Slot(int field)
    {
        if (_vtableFields < 0) throw new InvalidOperationException("Table fields can only be added between StartTable and EndTable.");
        if ((uint)field >= (uint)_vtableFields) throw new ArgumentOutOfRangeException(nameof(field));
        _vtable[field] = Offset;
    }

    public void AddFieldUInt8(int field, byte v, byte def) { if (v != def) { AddByte(v); Slot(field); } }
    public void AddFieldInt32(int field, int v, int def) { if (v != def) { AddInt32(v); Slot(field); } }
    public void AddFieldUInt32(int field, uint v, uint def) { if (v != def) { AddUInt32(v); Slot(field); } }
    public void AddFieldInt64(int field, long v, long def) { if (v != def) { AddInt64(v); Slot(field); } }
    public void AddFieldUInt64(int field, ulong v, ulong def) { if (v != def) { AddUInt64(v); Slot(field); } }

    public void AddFieldFloat(int field, float v, float def)
    {
        // Bitwise comparison: -0.0 and NaN payloads are kept, as the value is not the default's bits.
        if (BitConverter.SingleToInt32Bits(v) != BitConverter.SingleToInt32Bits(def)) { AddFloat(v); Slot(field); }
    }

    /// <summary>Adds a uoffset field; 0 means absent.</summary>
    public void AddFieldOffset(int field, int offset)
    {
        if (offset == 0) return;
        AddOffset(offset);
        Slot(field);
    }

    /// <summary>Adds an inline struct of two uint64 fields (bmodel's <c>Binary</c>).</summary>
    public void AddFieldStruct(int field, ulong first, ulong second)
    {
        Prep(8, 16);
        AddUInt64(second);
        AddUInt64(first);
        Slot(field);
    }

    public int EndTable()
    {
        if (_vtableFields < 0) throw new InvalidOperationException("EndTable without StartTable.");
        AddInt32(0); // placeholder for the soffset to the vtable
        int tableOffset = Offset;
        int used = _vtableFields;
        while (used > 0 && _vtable[used - 1] == 0) used--;
        for (int i = used - 1; i >= 0; i--)
            AddUInt16((ushort)(_vtable[i] != 0 ? tableOffset - _vtable[i] : 0));
        int tableSize = tableOffset - _objectStart;
        if (tableSize > ushort.MaxValue) throw new InvalidOperationException("A table's inline size cannot exceed 65535 bytes.");
        AddUInt16((ushort)tableSize);
        AddUInt16((ushort)((used + 2) * 2));

        // Share an identical vtable written before, if any.
        int vtableSize = (used + 2) * 2;
        ReadOnlySpan<byte> fresh = _buf.AsSpan(_space, vtableSize);
        int existing = 0;
        foreach (int vt in _vtables)
        {
            int pos = _buf.Length - vt;
            if (BinaryPrimitives.ReadUInt16LittleEndian(_buf.AsSpan(pos)) != vtableSize) continue;
            if (_buf.AsSpan(pos, vtableSize).SequenceEqual(fresh)) { existing = vt; break; }
        }
        if (existing != 0)
        {
            _space = _buf.Length - tableOffset;
            BinaryPrimitives.WriteInt32LittleEndian(_buf.AsSpan(_space), existing - tableOffset);
        }
        else
        {
            _vtables.Add(Offset);
            BinaryPrimitives.WriteInt32LittleEndian(_buf.AsSpan(_buf.Length - tableOffset), Offset - tableOffset);
        }
        _vtableFields = -1;
        return tableOffset;
    }

    /// <summary>Writes the root uoffset and returns the finished buffer.</summary>
    public byte[] Finish(int rootTable)
    {
        NotNested();
        Prep(_minAlign, 4);
        AddOffset(rootTable);
        return _buf.AsSpan(_space).ToArray();
    }

    private void NotNested()
    {
        if (_vtableFields >= 0) throw new InvalidOperationException("Objects cannot be created while a table is being built.");
        if (_inVector) throw new InvalidOperationException("Objects cannot be created while a vector is being built.");
    }
}
