#!/usr/bin/perl

# generate.pl - writes the hostile-input corpus of t/85-hostile.t: one
# file per case in this folder, and MANIFEST, which says for each file
# where it is sent, with which Content-Type, and what the module must
# answer.
#
#     perl t/hostile/generate.pl
#
# The test CA.  Enrollment cases are CMS SignedData, and most must be
# signed by a certificate that chains to the CA nginx trusts, or they
# would all be refused at the signature.  The signed files are
# committed, not made at test time, so that the corpus is a fixed set of
# bytes: a failure can be replayed byte for byte, the files can seed a
# fuzzer, and the test needs no openssl run per case.  That requires the
# CA they were signed under, so the test PKI used for them is committed
# too, in pki/ (made by MdmWatch::Pki; its keys protect nothing but this
# corpus), and t/85-hostile.t points mdm_watch_trusted_certificate at
# pki/ca.pem.  This script reuses pki/ when it is complete and makes a
# new one only when it is missing, which changes every signed file.
# MdmWatch::Pki certificates are valid for ten years: once pki/watch.pem
# expires, t/85-hostile.t says so and skips, and the corpus is
# regenerated after deleting pki/.
#
# Signatures and signing times differ on every run, so a rerun rewrites
# the signed files with other bytes; what each case is stays the same.
#
# Malformed binary plists are written byte by byte by the small writer
# below (bp_*), not by a library, so that each defect is exactly the one
# the file is named for.

use strict;
use warnings;
no warnings 'portable';

use FindBin;
use lib "$FindBin::Bin/../lib";

use File::Temp qw(tempdir);

use MdmWatch::Message qw(machine_info sign checkin);
use MdmWatch::Pki;

my $OUT = $FindBin::Bin;
my $pki = MdmWatch::Pki->new(dir => "$OUT/pki");
unlink "$OUT/pki/pki.lock";

my $WATCH = $pki->udid;
my $PHONE = '00008110-000A1B2C3D4E5F60';
my $UNKNOWN_ST = '6B8E2F4A-1C3D-4E5F-8A9B-0C1D2E3F4A5B';

my $CMS = 'application/pkcs7-signature';
my $CHECKIN = 'application/x-apple-aspen-mdm-checkin';

my @CASES;

sub case {
    my ($file, $to, $expect, $what, $bytes, %o) = @_;
    die "duplicate case $file\n" if grep { $_->{file} eq $file } @CASES;
    die "$file: expect is 400, 403, 403-challenge or 200-upstream\n"
        unless $expect =~ /^(?:400|403|403-challenge|200-upstream)$/;
    push @CASES, {
        file   => $file,
        to     => $to,
        type   => $o{type} // ($to eq 'enroll' ? $CMS : $CHECKIN),
        expect => $expect,
        known  => $o{known} // '-',
        what   => $what,
        bytes  => $bytes,
    };
}

sub enroll { case($_[0], 'enroll', @_[1 .. $#_]) }
sub checkin_case { case($_[0], 'checkin', @_[1 .. $#_]) }


# signing and other openssl work

sub signed {
    my ($content, %o) = @_;
    return sign($content, pki => $pki, signer => 'watch', %o);
}

sub openssl_cms {
    my ($content, @args) = @_;
    my $tmp = tempdir(CLEANUP => 1);
    spew("$tmp/in", $content);
    MdmWatch::Pki::run('openssl', 'cms', @args, '-in', "$tmp/in",
        '-out', "$tmp/out", '-outform', 'DER');
    return slurp("$tmp/out");
}


# XML machine info and check-ins with parts written raw

sub mi_udid_raw {
    my ($raw) = @_;
    my $xml = machine_info();
    $xml =~ s{<string>\Q$WATCH\E</string>}{<string>$raw</string>}
        or die "no UDID in the machine info\n";
    return $xml;
}

sub mi_insert {
    my ($xml_inside_dict) = @_;
    my $xml = machine_info();
    $xml =~ s{</dict>\n</plist>\n\z}{$xml_inside_dict</dict>\n</plist>\n}
        or die "no end of dictionary in the machine info\n";
    return $xml;
}

# a GetToken whose fields are given as raw XML fragments
sub get_token_raw {
    my (%f) = @_;
    my %x = (
        MessageType      => '<string>GetToken</string>',
        UDID             => "<string>$PHONE</string>",
        TokenServiceType => '<string>com.apple.watch.pairing</string>',
        SecurityToken    => "<string>$UNKNOWN_ST</string>",
        PhoneUDID        => "<string>$PHONE</string>",
        WatchUDID        => "<string>$WATCH</string>",
        TokenParameters  => undef,
        extra            => '',
        params_extra     => '',
        %f,
    );

    my $params = $x{TokenParameters} // "<dict>\n"
        . join('', map { defined $x{$_} ? "\t\t<key>$_</key>\n\t\t$x{$_}\n"
                                        : '' }
            qw(SecurityToken PhoneUDID WatchUDID))
        . $x{params_extra} . "\t</dict>";

    return qq{<?xml version="1.0" encoding="UTF-8"?>\n}
        . qq{<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" }
        . qq{"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n}
        . qq{<plist version="1.0">\n<dict>\n}
        . join('', map { defined $x{$_} ? "\t<key>$_</key>\n\t$x{$_}\n" : '' }
            qw(MessageType UDID TokenServiceType))
        . "\t<key>TokenParameters</key>\n\t$params\n"
        . $x{extra}
        . "</dict>\n</plist>\n";
}

sub str { '<string>' . $_[0] . '</string>' }

sub nested_arrays {
    my ($n) = @_;
    return '<array>' x $n . '</array>' x $n;
}

# nesting the guard of a depth counter cannot see: groups of $per
# arrays, each followed by a string whose CDATA section or comment holds
# as many closing tags as text
sub hidden_nesting {
    my ($groups, $per, $how) = @_;
    my $close = '</array>' x $per;
    my $hide = $how eq 'cdata' ? "<string><![CDATA[$close]]></string>"
                               : "<!-- $close -->";
    return ('<array>' x $per . $hide) x $groups
        . '</array>' x ($per * $groups);
}

sub many_keys {
    my ($n) = @_;
    return join '', map { sprintf "\t<key>K%05d</key>\n\t<string>v</string>\n",
        $_ } 1 .. $n;
}

sub billion_laughs {
    my ($value) = @_;
    my $dtd = qq{<!ENTITY a "aaaaaaaaaa">\n};
    for my $e ('b' .. 'j') {
        my $prev = chr(ord($e) - 1);
        $dtd .= qq{<!ENTITY $e "} . "&$prev;" x 10 . qq{">\n};
    }
    return qq{<?xml version="1.0" encoding="UTF-8"?>\n}
        . qq{<!DOCTYPE plist [\n$dtd]>\n}
        . $value;
}


# a binary plist writer, byte by byte
#
# A tree (strings, \data, \\integer, [array], {dict with sorted keys})
# is flattened depth first into objects; bp_file lays them out after
# "bplist00", then the offset table and the 32-byte trailer, and takes
# overrides for every trailer field so that each can be made wrong.

sub bp_int_bytes {
    my ($n) = @_;
    return "\x10" . pack('C', $n) if $n < 0x100;
    return "\x11" . pack('n', $n) if $n < 0x10000;
    return "\x12" . pack('N', $n) if $n < 0x100000000;
    return "\x13" . pack('Q>', $n);
}

sub bp_marker {
    my ($type, $count) = @_;
    return pack('C', ($type << 4) | $count) if $count < 15;
    return pack('C', ($type << 4) | 0x0f) . bp_int_bytes($count);
}

sub bp_string {
    my ($s) = @_;
    return bp_marker(0x5, length $s) . $s unless $s =~ /[^\x00-\x7f]/;
    my $u16 = join '', map { pack 'n', $_ } unpack 'U*', $s;
    return bp_marker(0x6, length($u16) / 2) . $u16;
}

sub bp_utf16_units {
    my (@units) = @_;
    return bp_marker(0x6, scalar @units) . pack('n*', @units);
}

sub bp_data { bp_marker(0x4, length $_[0]) . $_[0] }

sub bp_refs {
    my ($size, @refs) = @_;
    my $fmt = { 1 => 'C', 2 => 'n', 4 => 'N', 8 => 'Q>' }->{$size};
    return join '', map {
        $fmt ? pack($fmt, $_) : substr(pack('Q>', $_), 8 - $size)
    } @refs;
}

sub bp_array {
    my ($size, @refs) = @_;
    return bp_marker(0xa, scalar @refs) . bp_refs($size, @refs);
}

sub bp_dict {
    my ($size, $keys, $values) = @_;
    return bp_marker(0xd, scalar @$keys) . bp_refs($size, @$keys, @$values);
}

sub bp_flatten {
    my ($v, $objs) = @_;
    my $i = @$objs;
    push @$objs, undef;
    my $ref = ref $v;

    if (!$ref) {
        $objs->[$i] = { bytes => bp_string($v) };
    } elsif ($ref eq 'SCALAR') {
        $objs->[$i] = { bytes => bp_data($$v) };
    } elsif ($ref eq 'REF') {
        $objs->[$i] = { bytes => bp_int_bytes(${$$v}) };
    } elsif ($ref eq 'ARRAY') {
        $objs->[$i] = { array => [map { bp_flatten($_, $objs) } @$v] };
    } elsif ($ref eq 'HASH') {
        my @k = sort keys %$v;
        my @kr = map { bp_flatten($_, $objs) } @k;
        my @vr = map { bp_flatten($v->{$_}, $objs) } @k;
        $objs->[$i] = { keys => \@kr, values => \@vr };
    } else {
        die "bp_flatten: cannot write a $ref\n";
    }
    return $i;
}

sub bp_objects {
    my ($tree, $size) = @_;
    my @objs;
    bp_flatten($tree, \@objs);
    $size //= @objs < 0x100 ? 1 : 2;
    return map {
        $_->{bytes} // ($_->{array} ? bp_array($size, @{ $_->{array} })
                                    : bp_dict($size, $_->{keys}, $_->{values}))
    } @objs;
}

sub bp_file {
    my ($objects, %o) = @_;
    my $data = 'bplist00';
    my @offsets;

    for my $obj (@$objects) {
        push @offsets, length $data;
        $data .= $obj;
    }
    @offsets = $o{offsets}->(length $data, @offsets) if $o{offsets};

    my $table = length $data;
    my $osize = $o{offset_size_real}
        // ($table < 0x100 ? 1 : $table < 0x10000 ? 2 : 4);
    $data .= bp_refs($osize, @offsets);

    my $rsize = $o{ref_size} // (@$objects < 0x100 ? 1 : 2);
    $data .= "\0" x 6
        . pack('CC', $o{offset_size} // $osize, $rsize)
        . pack('Q>', $o{objects} // scalar @$objects)
        . pack('Q>', $o{top} // 0)
        . pack('Q>', $o{table} // $table);
    return $data;
}

sub bp_tree { bp_file([bp_objects($_[0])], @_[1 .. $#_]) }

sub mi_tree {
    my (%f) = @_;
    return {
        UDID => $WATCH, SERIAL => 'WTCHSERIAL01', PRODUCT => 'Watch7,1',
        VERSION => '21R355', OS_VERSION => '10.0', LANGUAGE => 'en', %f,
    };
}

sub get_token_tree {
    return {
        MessageType => 'GetToken', UDID => $PHONE,
        TokenServiceType => 'com.apple.watch.pairing',
        TokenParameters => { SecurityToken => $UNKNOWN_ST,
            PhoneUDID => $PHONE, WatchUDID => $WATCH },
    };
}

# a dict { UDID => ..., <name> => object 4 } with object 4 given raw,
# and more raw objects after it; refs are one byte
sub bp_dict_with {
    my ($name, $value, @more) = @_;
    return (bp_dict(1, [1, 2], [3, 4]), bp_string('UDID'), bp_string($name),
        bp_string($WATCH), $value, @more);
}

# a dict { UDID, Nest => a0 }, a(i) = [ a(i+1) ], the last one empty
sub bp_deep {
    my ($depth) = @_;
    my @objs = (bp_dict(2, [1, 2], [3, 4]), bp_string('UDID'),
        bp_string('Nest'), bp_string($WATCH));
    for my $i (0 .. $depth - 1) {
        push @objs, $i == $depth - 1 ? bp_array(2) : bp_array(2, 5 + $i);
    }
    return bp_file(\@objs, ref_size => 2);
}

# a(i) = [ a(i+1), a(i+1) ]: each level doubles what a parser that
# follows every reference builds
sub bp_doubling {
    my ($levels, $top_udid_key) = @_;
    my @objs = (bp_dict(1, [1, 2], [3, 4]), bp_string($top_udid_key),
        bp_string('Tree'), bp_string($WATCH));
    for my $i (0 .. $levels - 1) {
        push @objs, bp_array(1, 5 + $i, 5 + $i);
    }
    push @objs, bp_string('leaf');
    return bp_file(\@objs);
}

my %BP_BAD = (
    'offset-past-end' => ['an object offset points 4000 bytes past the end',
        sub { bp_tree($_[0], offset_size_real => 2,
            offsets => sub { my ($end, @o) = @_; $o[3] = $end + 4000; @o }) }],
    'object-count-millions' => ['the trailer announces 50 million objects',
        sub { bp_tree($_[0], objects => 50_000_000) }],
    'object-count-overflow' => ['object count times offset size wraps to'
        . ' a small number', sub { bp_tree($_[0], offset_size => 8,
            objects => 0x2000000000000002) }],
    'top-object-out-of-range' => ['the top object is number 4000 of a'
        . ' dozen', sub { bp_tree($_[0], top => 4000) }],
    'offset-table-past-end' => ['the offset table starts past the end',
        sub { bp_tree($_[0], table => 0x7fffffff) }],
    'offset-size-zero' => ['offsets and references are 0 bytes wide',
        sub { bp_tree($_[0], offset_size => 0, ref_size => 0) }],
);

sub bp_bad {
    my ($kind, $tree) = @_;
    my ($what, $make) = @{ $BP_BAD{$kind} };
    return ($what, $make->($tree));
}


# the corpus: enrollment requests

my $mi = machine_info();
my $der = signed($mi);
my $ber = signed($mi, form => 'ber');

enroll('enroll-empty-body.bin', '400', 'an empty body', '');
enroll('enroll-text-not-cms.txt', '400', 'plain text, no DER at all',
    "this is no CMS SignedData\n");
enroll('enroll-unsigned-xml-plist.xml', '400',
    'machine info as a bare XML plist, not signed', $mi);
enroll('enroll-cms-truncated-half.der', '400',
    'signed machine info cut in half', substr($der, 0, length($der) >> 1));
enroll('enroll-cms-truncated-last-byte.der', '400',
    'signed machine info without its last byte', substr($der, 0, -1));
enroll('enroll-cms-trailing-garbage.der', '400',
    'signed machine info followed by 64 bytes of garbage',
    $der . ("\xa5" x 64));
enroll('enroll-ber-indefinite-truncated.ber', '400',
    'BER signed machine info (indefinite lengths) cut before its end-of-'
    . 'contents octets', substr($ber, 0, -6));
enroll('enroll-cms-detached-content.der', '400',
    'a detached signature: SignedData without the machine info',
    openssl_cms($mi, '-sign', '-binary', '-signer', $pki->cert('watch'),
        '-inkey', $pki->key('watch')));
enroll('enroll-cms-enveloped-data.der', '400',
    'CMS EnvelopedData (machine info encrypted to the watch), not'
    . ' SignedData', openssl_cms($mi, '-encrypt', '-binary', '-aes256',
        '-recip', $pki->cert('watch')));
enroll('enroll-cms-data-content-type.der', '400',
    'CMS of content type data: the plist wrapped, not signed',
    openssl_cms($mi, '-data_create', '-binary'));
enroll('enroll-cms-empty-content.der', '400',
    'SignedData over empty content', signed(''));
enroll('enroll-der-length-overflow.der', '400',
    'a SEQUENCE whose length takes 8 bytes of 0xff',
    "\x30\x88" . "\xff" x 8 . "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02");
enroll('enroll-ber-nested-indefinite-5000.ber', '400',
    '5000 indefinite-length SEQUENCEs nested in one another',
    "\x30\x80" x 5000 . "\x00\x00" x 5000);
enroll('enroll-der-signed-data-oid-then-garbage.der', '400',
    'the SignedData OID, then 200 bytes of garbage',
    "\x30\x81\xd7\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02\xa0\x81\xc9"
    . pack('C*', map { ($_ * 131 + 7) % 256 } 1 .. 201));

# signatures

enroll('enroll-signed-by-untrusted-ca.der', '403',
    'machine info signed by a device certificate under another root',
    signed($mi, signer => 'rogue_watch'));
enroll('enroll-signed-by-expired-cert.der', '403',
    'machine info signed by a device certificate that expired',
    signed($mi, signer => 'expired'));
enroll('enroll-self-signed.der', '403',
    'machine info signed by a self-signed device certificate',
    signed($mi, signer => 'self_signed'));
(my $altered = $der) =~ s/WTCHSERIAL01/WTCHSERIAL02/
    or die "no serial number in the signed machine info\n";
enroll('enroll-content-altered.der', '403',
    'signed machine info whose serial number was changed afterwards',
    $altered);
enroll('enroll-signer-certificate-missing.der', '403',
    'signed machine info without the signer certificate',
    signed($mi, nocerts => 1));
enroll('enroll-intermediate-missing.der', '403',
    'signed under a sub CA that is neither in the CMS nor trusted',
    signed($mi, signer => 'chained_watch'));
my $flipped = $der;
substr($flipped, -1, 1) = chr(ord(substr $flipped, -1, 1) ^ 0x5a);
enroll('enroll-signature-last-byte-flipped.der', '403',
    'signed machine info with the last byte of the signature changed',
    $flipped);

# content that is no usable plist

enroll('enroll-content-not-plist.der', '400',
    'signed text that is no plist', signed("UDID=$WATCH\n"));
enroll('enroll-plist-array-root.der', '400',
    'a signed plist whose root is an array',
    signed(qq{<?xml version="1.0"?><plist version="1.0"><array>}
        . qq{<string>$WATCH</string></array></plist>}));
enroll('enroll-plist-string-root.der', '400',
    'a signed plist whose root is a string',
    signed(qq{<?xml version="1.0"?><plist version="1.0">}
        . qq{<string>$WATCH</string></plist>}));
enroll('enroll-xml-unclosed.der', '400',
    'signed machine info cut inside the dictionary',
    signed(substr($mi, 0, index($mi, '<key>SERIAL</key>'))));
enroll('enroll-xml-mismatched-tags.der', '400',
    'signed machine info with </array> closing the dictionary',
    signed($mi =~ s{</dict>\n</plist>}{</array>\n</plist>}r));
enroll('enroll-dict-key-without-value.der', '400',
    'a dictionary with two keys in a row, the first without a value',
    signed($mi =~ s{<key>SERIAL</key>}{<key>ORPHAN</key><key>SERIAL</key>}r));
enroll('enroll-dict-udid-key-without-value.der', '400',
    'UDID as the last key of the dictionary, with no value after it',
    signed(machine_info(UDID => undef)
        =~ s{</dict>\n</plist>}{<key>UDID</key></dict>\n</plist>}r));
enroll('enroll-doctype-entity-expansion.der', '400',
    'a document type declaring nested entities (billion laughs), UDID'
    . ' &j;', signed(billion_laughs(
        '<plist version="1.0"><dict><key>UDID</key><string>&j;</string>'
        . '</dict></plist>')));

# UDIDs of every shape

enroll('enroll-udid-missing.der', '400', 'machine info without UDID',
    signed(machine_info(UDID => undef)));
enroll('enroll-udid-empty.der', '400', 'an empty UDID',
    signed(machine_info(UDID => '')));
enroll('enroll-udid-65-chars.der', '400', 'a UDID of 65 characters',
    signed(machine_info(UDID => 'A' x 65)));
enroll('enroll-udid-4096-chars.der', '400', 'a UDID of 4096 characters',
    signed(machine_info(UDID => '0' x 4096)));
enroll('enroll-udid-integer.der', '400', 'UDID as an integer',
    signed(machine_info(UDID => \\8301)));
enroll('enroll-udid-data.der', '400', 'UDID as data',
    signed(machine_info(UDID => \$WATCH)));
enroll('enroll-udid-dict.der', '400', 'UDID as a dictionary',
    signed(machine_info(UDID => { UDID => $WATCH })));
enroll('enroll-udid-space.der', '400', 'a UDID with a space inside',
    signed(machine_info(UDID => '00008301 0A1B2C3D4E5F6071')));
enroll('enroll-udid-trailing-newline.der', '400',
    'a UDID followed by a newline inside the string',
    signed(mi_udid_raw("$WATCH\n")));
enroll('enroll-udid-asterisk.der', '400', 'the UDID "*"',
    signed(machine_info(UDID => '*')));
enroll('enroll-udid-colon.der', '400',
    'a UDID shaped like a Redis key, with colons',
    signed(machine_info(UDID => 'mdm_watch:pair:' . $WATCH)));
enroll('enroll-udid-unicode.der', '400',
    'a UDID ending in a non-ASCII letter (U+00C9)',
    signed(mi_udid_raw('00008301-0A1B2C3D4E5F607' . "\xc3\x89")));
enroll('enroll-udid-fullwidth-digits.der', '400',
    'a UDID of fullwidth digits (U+FF10..)',
    signed(mi_udid_raw(join '', map { "\xef\xbc" . chr(0x90 + $_) }
        0 .. 9)));
enroll('enroll-udid-invalid-utf8.der', '400',
    'a UDID with the bytes ff fe inside, invalid UTF-8',
    signed(mi_udid_raw("00008301\xff\xfe0A1B2C3D4E5F6071")));
enroll('enroll-udid-raw-nul.der', '400',
    'a UDID with a NUL byte inside: a C string would end at "00008301"',
    signed(mi_udid_raw("00008301\x00-0A1B2C3D4E5F6071")));
enroll('enroll-udid-entity.der', '400',
    'a UDID with &amp; and &lt; inside, which decode to & and <',
    signed(mi_udid_raw('00008301&amp;0A1B&lt;2C3D')));
enroll('enroll-udid-char-ref-nul.der', '400',
    'a UDID with the character reference &#0; inside',
    signed(mi_udid_raw('00008301&#0;-0A1B2C3D4E5F6071')));
enroll('enroll-udid-undefined-entity.der', '400',
    'a UDID with the undefined entity &watch; inside',
    signed(mi_udid_raw('00008301&watch;')));

# valid machine info of unusual shape: challenged

enroll('enroll-udid-lowercase.der', '403-challenge',
    'a UDID in lower case', signed(machine_info(UDID => lc $WATCH)));
enroll('enroll-udid-40-hex.der', '403-challenge',
    'a UDID of 40 hex digits (older devices)',
    signed(machine_info(UDID => 'a1b2c3d4e5f60718293a4b5c6d7e8f9012345678')));
enroll('enroll-udid-uuid.der', '403-challenge', 'a UDID shaped as a UUID',
    signed(machine_info(UDID => '3F2504E0-4F89-41D3-9A0C-0305E82C3301')));
enroll('enroll-udid-64-chars.der', '403-challenge',
    'a UDID of 64 characters, the longest allowed',
    signed(machine_info(UDID => '0123456789ABCDEF-' x 3 . 'Z' x 13)));
enroll('enroll-udid-char-refs.der', '403-challenge',
    'a UDID written with character references (&#48; and &#x41;) that'
    . ' decode to a valid UDID',
    signed(mi_udid_raw('&#48;0008301-0&#x41;1B2C3D4E5F6071')));
enroll('enroll-ber-indefinite-binary-plist.ber', '403-challenge',
    'BER with indefinite lengths around a binary plist (plistutil)',
    signed(MdmWatch::Message::to_binary($mi), form => 'ber'));
enroll('enroll-binary-plist-handmade.der', '403-challenge',
    'a valid binary plist from this generator: the control for the'
    . ' malformed ones', signed(bp_tree(mi_tree())));
enroll('enroll-binary-plist-utf16-udid.der', '403-challenge',
    'a binary plist whose UDID is a UTF-16 string of ASCII characters',
    signed(bp_file([bp_dict(1, [1], [2]), bp_string('UDID'),
        bp_utf16_units(map { ord } split //, $WATCH)])));
enroll('enroll-pairing-token-bad-base64.der', '403-challenge',
    'PAIRING_TOKEN data that is not base64: a malformed token',
    signed(mi_insert("\t<key>PAIRING_TOKEN</key>\n"
        . "\t<data>!!!*** not base64 @@@</data>\n")));
enroll('enroll-pairing-token-60k.der', '403-challenge',
    'PAIRING_TOKEN of 60 KB of random bytes',
    signed(machine_info(PAIRING_TOKEN =>
        pack('C*', map { ($_ * 7919 + 13) % 256 } 1 .. 60_000))));
enroll('enroll-pairing-token-integer.der', '403-challenge',
    'PAIRING_TOKEN as an integer', signed(mi_insert(
        "\t<key>PAIRING_TOKEN</key>\n\t<integer>1</integer>\n")));
enroll('enroll-1000-keys.der', '403-challenge',
    'machine info with 1000 more keys', signed(mi_insert(many_keys(1000))));

# plists too deep or too large for the guard in front of libplist

enroll('enroll-plist-deep-nesting.der', '400',
    'machine info with arrays nested 1000 deep',
    signed(mi_insert("\t<key>Nest</key>\n" . nested_arrays(1000) . "\n")));
enroll('enroll-plist-nesting-hidden-in-cdata.der', '400',
    'arrays nested 420 deep, with closing tags inside CDATA sections'
    . ' after each 14', signed(mi_insert("\t<key>Nest</key>\n"
        . hidden_nesting(30, 14, 'cdata') . "\n")));
enroll('enroll-plist-nesting-hidden-in-comments.der', '400',
    'arrays nested 420 deep, with closing tags inside comments after'
    . ' each 14', signed(mi_insert("\t<key>Nest</key>\n"
        . hidden_nesting(30, 14, 'comment') . "\n")));
enroll('enroll-plist-5000-keys.der', '400',
    'machine info with 5000 more keys, over the node bound',
    signed(mi_insert(many_keys(5000))));

# malformed binary plists

for my $kind (sort keys %BP_BAD) {
    my ($what, $bytes) = bp_bad($kind, mi_tree());
    enroll("enroll-binary-plist-$kind.der", '400',
        "binary machine info: $what", signed($bytes));
}
enroll('enroll-binary-plist-self-reference.der', '400',
    'binary machine info with an array that contains itself',
    signed(bp_file([bp_dict_with('Loop', bp_array(1, 4))])));
enroll('enroll-binary-plist-dict-cycle.der', '400',
    'binary machine info whose dictionary holds itself as a value',
    signed(bp_file([bp_dict(1, [1, 2], [3, 0]), bp_string('UDID'),
        bp_string('Self'), bp_string($WATCH)])));
enroll('enroll-binary-plist-deep-nesting.der', '400',
    'binary machine info with arrays nested 1000 deep',
    signed(bp_deep(1000)));
enroll('enroll-binary-plist-shared-subtree-million-nodes.der', '400',
    'binary machine info of 20 arrays, each holding the next twice: a'
    . ' million nodes when expanded', signed(bp_doubling(20, 'UDID')));
enroll('enroll-binary-plist-string-length-huge.der', '400',
    'binary machine info whose UDID string announces 2^63 bytes',
    signed(bp_file([bp_dict(1, [1], [2]), bp_string('UDID'),
        "\x5f\x13" . pack('Q>', 0x7ffffffffffffff0) . $WATCH])));
enroll('enroll-binary-plist-array-count-huge.der', '400',
    'binary machine info with an array that announces 2^60 elements',
    signed(bp_file([bp_dict_with('Big',
        "\xaf\x13" . pack('Q>', 0x1000000000000000) . "\x01\x02")])));
enroll('enroll-binary-plist-reference-out-of-range.der', '400',
    'binary machine info with a reference to object 200 of 5',
    signed(bp_file([bp_dict_with('Ref', bp_array(1, 200))])));
enroll('enroll-binary-plist-dict-key-integer.der', '400',
    'binary machine info with an integer as a dictionary key',
    signed(bp_file([bp_dict(1, [1, 2], [3, 4]), bp_string('UDID'),
        bp_int_bytes(7), bp_string($WATCH), bp_string('x')])));
enroll('enroll-binary-plist-unknown-marker.der', '400',
    'binary machine info with an object of the unused type 0x7',
    signed(bp_file([bp_dict_with('Odd', "\x73abc")])));
enroll('enroll-binary-plist-trailer-only.der', '400',
    'the binary plist header and a trailer of zeros, nothing else',
    signed('bplist00' . "\0" x 32));
enroll('enroll-binary-plist-utf16-lone-surrogate.der', '400',
    'a binary plist whose UDID is UTF-16 with an unpaired surrogate',
    signed(bp_file([bp_dict(1, [1], [2]), bp_string('UDID'),
        bp_utf16_units(0x30, 0xd800, 0x31, 0xdc00)])));


# the corpus: check-ins

my $st_entity = qq{<string>$UNKNOWN_ST</string>};

checkin_case('checkin-empty.bin', '200-upstream',
    'an empty check-in body', '');
checkin_case('checkin-not-plist.txt', '200-upstream',
    'a check-in body of plain text', "MessageType=GetToken\n");
checkin_case('checkin-json.json', '200-upstream',
    'a GetToken written as JSON', '{"MessageType":"GetToken",'
    . '"TokenServiceType":"com.apple.watch.pairing",'
    . '"TokenParameters":{"WatchUDID":"*"}}' . "\n");
checkin_case('checkin-xml-unclosed.xml', '200-upstream',
    'a GetToken cut inside TokenParameters',
    substr(get_token_raw(WatchUDID => str('*')), 0, 400));
checkin_case('checkin-invalid-utf8.xml', '200-upstream',
    'a TokenUpdate with invalid UTF-8 in a string',
    checkin(MessageType => 'TokenUpdate', UDID => $WATCH,
        Topic => "com.apple.mgmt.\xff\xfe\xc0"));
checkin_case('checkin-message-type-array.xml', '200-upstream',
    'a check-in whose MessageType is an array',
    get_token_raw(MessageType => '<array><string>GetToken</string></array>',
        WatchUDID => str('*')));
checkin_case('checkin-gettoken-service-upper-case.xml', '200-upstream',
    'a GetToken for COM.APPLE.WATCH.PAIRING: another service',
    get_token_raw(TokenServiceType => str('COM.APPLE.WATCH.PAIRING'),
        WatchUDID => str('*')));
checkin_case('checkin-doctype-billion-laughs.xml', '200-upstream',
    'a GetToken under a document type declaring nested entities',
    billion_laughs(get_token_raw(WatchUDID => str('&j;'))
        =~ s/^.*?<plist/<plist/sr));
checkin_case('checkin-gettoken-raw-nul.xml', '200-upstream',
    'a GetToken with a NUL byte in WatchUDID: no well-formed XML',
    get_token_raw(WatchUDID => str("00008301\x00*")));
checkin_case('checkin-gettoken-char-ref-nul.xml', '200-upstream',
    'a GetToken with &#0; in WatchUDID: no well-formed XML',
    get_token_raw(WatchUDID => str('00008301&#0;*')));

# GetToken fields and identifier shapes

checkin_case('checkin-gettoken-entities.xml', '400',
    'a GetToken whose WatchUDID is &lt;script&gt;&amp;&quot;',
    get_token_raw(WatchUDID => str('&lt;script&gt;&amp;&quot;')));
checkin_case('checkin-gettoken-char-refs.xml', '403',
    'a GetToken spelled with character references (Get&#84;oken, &#x63;om'
    . '...) and an unknown security token',
    get_token_raw(MessageType => str('Get&#84;oken'),
        TokenServiceType => str('&#x63;om.apple.watch.pairing')));
checkin_case('checkin-gettoken-security-token-integer.xml', '400',
    'a GetToken whose SecurityToken is an integer',
    get_token_raw(SecurityToken => '<integer>1</integer>'));
checkin_case('checkin-gettoken-watchudid-missing.xml', '400',
    'a GetToken without WatchUDID', get_token_raw(WatchUDID => undef));
checkin_case('checkin-gettoken-token-parameters-array.xml', '400',
    'a GetToken whose TokenParameters is an array',
    get_token_raw(TokenParameters => "<array>$st_entity</array>"));
checkin_case('checkin-gettoken-watchudid-65-chars.xml', '400',
    'a GetToken whose WatchUDID has 65 characters',
    get_token_raw(WatchUDID => str('B' x 65)));
checkin_case('checkin-gettoken-phoneudid-colon.xml', '400',
    'a GetToken whose PhoneUDID has a colon',
    get_token_raw(PhoneUDID => str("mdm_watch:$PHONE"),
        UDID => str("mdm_watch:$PHONE")));
checkin_case('checkin-gettoken-watchudid-asterisk.xml', '400',
    'a GetToken whose WatchUDID is "*"',
    get_token_raw(WatchUDID => str('*')));
checkin_case('checkin-gettoken-watchudid-space.xml', '400',
    'a GetToken whose WatchUDID has a space',
    get_token_raw(WatchUDID => str('00008301 0A1B2C3D4E5F6071')));
checkin_case('checkin-gettoken-watchudid-unicode.xml', '400',
    'a GetToken whose WatchUDID ends in U+00C9',
    get_token_raw(WatchUDID => str("00008301-0A1B2C3D4E5F607\xc3\x89")));
checkin_case('checkin-gettoken-watchudid-invalid-utf8.xml', '400',
    'a GetToken whose WatchUDID has the bytes ff fe',
    get_token_raw(WatchUDID => str("00008301\xff\xfe0A1B")));
checkin_case('checkin-gettoken-watchudid-empty.xml', '400',
    'a GetToken whose WatchUDID is empty', get_token_raw(WatchUDID => str('')));
checkin_case('checkin-gettoken-unknown-security-token.xml', '403',
    'a well-formed GetToken with a security token never issued',
    get_token_raw());
checkin_case('checkin-gettoken-security-token-glob.xml', '403',
    'a GetToken whose SecurityToken is the Redis pattern "*"',
    get_token_raw(SecurityToken => str('*')));
checkin_case('checkin-gettoken-security-token-lowercase.xml', '403',
    'a GetToken with an unknown security token in lower case',
    get_token_raw(SecurityToken => str(lc $UNKNOWN_ST)));
checkin_case('checkin-gettoken-udid-not-phone.xml', '403',
    'a GetToken whose UDID is not its PhoneUDID',
    get_token_raw(UDID => str('00008110-0000000000000001')));
checkin_case('checkin-gettoken-watchudid-lowercase.xml', '403',
    'a GetToken with a lower-case WatchUDID, unknown security token',
    get_token_raw(WatchUDID => str(lc $WATCH)));
checkin_case('checkin-gettoken-watchudid-40-hex.xml', '403',
    'a GetToken with a WatchUDID of 40 hex digits, unknown security token',
    get_token_raw(WatchUDID =>
        str('a1b2c3d4e5f60718293a4b5c6d7e8f9012345678')));
checkin_case('checkin-gettoken-watchudid-uuid.xml', '403',
    'a GetToken with a UUID as WatchUDID, unknown security token',
    get_token_raw(WatchUDID => str('3F2504E0-4F89-41D3-9A0C-0305E82C3301')));
checkin_case('checkin-gettoken-watchudid-64-chars.xml', '403',
    'a GetToken with a WatchUDID of 64 characters, unknown security token',
    get_token_raw(WatchUDID => str('0123456789ABCDEF-' x 3 . 'Z' x 13)));
checkin_case('checkin-gettoken-bad-base64.xml', '403',
    'a GetToken with a data field that is not base64, unknown security'
    . ' token', get_token_raw(extra => "\t<key>Extra</key>\n"
        . "\t<data>!!!*** not base64 @@@</data>\n"));
checkin_case('checkin-gettoken-1000-keys.xml', '403',
    'a GetToken with 1000 more keys in TokenParameters, unknown security'
    . ' token', get_token_raw(params_extra => many_keys(1000)));

# too deep, too many, binary: not read, passed to the MDM server

checkin_case('checkin-deep-nesting.xml', '200-upstream',
    'a GetToken (WatchUDID "*") with arrays nested 1000 deep',
    get_token_raw(WatchUDID => str('*'),
        extra => "\t<key>Nest</key>\n" . nested_arrays(1000) . "\n"));
checkin_case('checkin-nesting-hidden-in-cdata.xml', '200-upstream',
    'a GetToken (WatchUDID "*") with arrays nested 420 deep, closing tags'
    . ' hidden in CDATA sections',
    get_token_raw(WatchUDID => str('*'), extra => "\t<key>Nest</key>\n"
        . hidden_nesting(30, 14, 'cdata') . "\n"));
checkin_case('checkin-nesting-hidden-in-comments.xml', '200-upstream',
    'a GetToken (WatchUDID "*") with arrays nested 420 deep, closing tags'
    . ' hidden in comments',
    get_token_raw(WatchUDID => str('*'), extra => "\t<key>Nest</key>\n"
        . hidden_nesting(30, 14, 'comment') . "\n"));
checkin_case('checkin-huge-number-of-keys.xml', '200-upstream',
    'an Authenticate with 5000 more keys',
    checkin(MessageType => 'Authenticate', UDID => $WATCH)
        =~ s{</dict>\n</plist>}{many_keys(5000) . "</dict>\n</plist>"}er);
checkin_case('checkin-gettoken-5000-keys.xml', '200-upstream',
    'a GetToken (WatchUDID "*") with 5000 more keys, over the node bound',
    get_token_raw(WatchUDID => str('*'), extra => many_keys(5000)));
checkin_case('checkin-binary-plist-gettoken.bplist', '200-upstream',
    'a well-formed GetToken as a binary plist: not read in check-ins',
    bp_tree(get_token_tree()));
checkin_case('checkin-binary-plist-cyclic.bplist', '200-upstream',
    'a binary GetToken whose TokenParameters contains itself',
    bp_file([bp_dict(1, [1, 2, 3, 4], [5, 6, 7, 8]),
        bp_string('MessageType'), bp_string('TokenParameters'),
        bp_string('TokenServiceType'), bp_string('UDID'),
        bp_string('GetToken'), bp_array(1, 6),
        bp_string('com.apple.watch.pairing'), bp_string($PHONE)]));
checkin_case('checkin-binary-plist-deep-nesting.bplist', '200-upstream',
    'a binary plist with arrays nested 1000 deep', bp_deep(1000));
checkin_case('checkin-binary-plist-shared-subtree-million-nodes.bplist',
    '200-upstream', 'a binary plist of 20 arrays, each holding the next'
    . ' twice', bp_doubling(20, 'MessageType'));
for my $kind (sort keys %BP_BAD) {
    my ($what, $bytes) = bp_bad($kind, get_token_tree());
    checkin_case("checkin-binary-plist-$kind.bplist", '200-upstream',
        "a binary GetToken: $what", $bytes);
}


# writing

opendir my $dh, $OUT or die "opendir $OUT: $!\n";
for my $old (readdir $dh) {
    next unless $old =~ /^(?:enroll|checkin)-/;
    unlink "$OUT/$old" or die "unlink $OUT/$old: $!\n";
}
closedir $dh;

my $manifest = <<'END';
# The hostile-input corpus of t/85-hostile.t, written by generate.pl.
#
# One case a line, fields separated by blanks, the description last:
#
#   file      the case, in this folder
#   location  enroll (POST to the mdm_watch_enroll location) or checkin
#             (PUT to the mdm_watch_checkin location)
#   type      the Content-Type sent
#   expect    what the module must answer:
#             400, 403           that status, and no JSON challenge
#             403-challenge      the JSON challenge, and Redis gains one
#                                security token for the UDID
#             200-upstream       the body goes to the MDM server unchanged
#   known     "-", or "crash" while the current build crashes a worker
#             on the case: t/85-hostile.t then runs it as TODO
#   description
#
END

my $w = 0;
for (@CASES) { $w = length $_->{file} if length $_->{file} > $w }

for my $c (@CASES) {
    spew("$OUT/$c->{file}", $c->{bytes});
    $manifest .= sprintf "%-*s %-7s %-37s %-13s %-5s %s\n", $w, $c->{file},
        $c->{to}, $c->{type}, $c->{expect}, $c->{known}, $c->{what};
}
spew("$OUT/MANIFEST", $manifest);

printf "%d cases written to %s\n", scalar @CASES, $OUT;


sub spew {
    my ($file, $data) = @_;
    open my $fh, '>:raw', $file or die "open $file: $!\n";
    print {$fh} $data or die "write $file: $!\n";
    close $fh or die "close $file: $!\n";
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<:raw', $file or die "open $file: $!\n";
    local $/;
    return scalar(<$fh>) // '';
}
