#!/usr/bin/perl

# The indexes of pairs: mdm_watch:pairs, the sorted set of all paired
# watches, and mdm_watch:serial:<SERIAL>, the watch with that serial, in
# upper case.  Pairing adds to both; pairing again with another phone or
# another serial moves the serial; a watch's CheckOut removes its pair
# from both, but not a serial that moved on to another watch; a phone's
# CheckOut marks its watches unpaired and keeps them in both.  The pairs
# location finds each pair by its serial after each step.  A serial is
# indexed only if it is no longer than the location looks up, 64 bytes.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

use MdmWatch::Message qw(check_out);
use MdmWatch::Pairs qw(pair get_pairs);
use MdmWatch::Test;

my $t = MdmWatch::Test->new->setup(locations => <<'END');
        location = /pairs {
            mdm_watch_pairs;
        }
END

my $phone = $MdmWatch::Test::PHONE;
my $other_phone = '00008110-0000000000000D02';
my ($w1, $w2, $w3) = map { sprintf '00008301-0000000000000D1%d', $_ } 1 .. 3;

ok($t->enroll_phone(udid => $other_phone)->{recorded},
    'a second phone is recorded');

sub indexed {
    my ($what, @watches) = @_;
    is_deeply($t->redis('ZRANGE', 'mdm_watch:pairs', 0, -1), [@watches],
        "$what: the index of pairs holds " . (join(', ', @watches) || '-'));
    my @scores = @{ $t->redis('ZRANGE', 'mdm_watch:pairs', 0, -1,
        'WITHSCORES') };
    is_deeply([grep { $_ != 0 } @scores[grep { $_ % 2 } 0 .. $#scores]], [],
        "$what: every score in the index is 0");
}

sub serial_is {
    my ($what, $serial, $watch) = @_;
    is($t->redis('GET', "mdm_watch:serial:$serial"), $watch,
        "$what: the serial $serial is "
        . (defined $watch ? "that of $watch" : 'not indexed'));
    my ($res, $json) = get_pairs($t, 'serial=' . lc $serial);
    if (defined $watch) {
        is($json->{pairs}[0]{watch_udid}, $watch,
            "$what: the pairs location finds $watch by $serial");
    } else {
        is($res->{status}, 404, "$what: the pairs location finds nothing"
            . " by $serial");
    }
}

sub checks_out {
    my ($what, $udid) = @_;
    my $res = $t->checkin(check_out(udid => $udid));
    is($res->{status}, 200, "$what: the MDM server accepts the CheckOut");
    ok($t->registry_barrier, "$what: the module has followed it");
}

indexed('before any pairing');

pair($t, $w1, $phone, SERIAL => 'IDX-SER-1');
indexed('a watch paired', $w1);
serial_is('a watch paired', 'IDX-SER-1', $w1);

pair($t, $w2, $phone, SERIAL => 'idx-ser-2');
indexed('a second watch paired', $w1, $w2);
serial_is('a serial in lower case', 'IDX-SER-2', $w2);
is($t->redis('EXISTS', 'mdm_watch:serial:idx-ser-2'), 0,
    'a serial is indexed in upper case only');

pair($t, $w1, $other_phone, SERIAL => 'IDX-SER-1B');
indexed('a watch paired again with another phone', $w1, $w2);
serial_is('a watch paired again with another serial', 'IDX-SER-1', undef);
serial_is('a watch paired again with another serial', 'IDX-SER-1B', $w1);
is_deeply([$t->redis_members("mdm_watch:phone:$phone")], [$w2],
    'the first phone keeps its other watch only');

pair($t, $w3, $other_phone, SERIAL => 'IDX-SER-2');
indexed('a third watch paired', $w1, $w2, $w3);
serial_is('a serial that moved to another watch', 'IDX-SER-2', $w3);

checks_out('a CheckOut of a watch whose serial moved on', $w2);
indexed('a CheckOut of a watch whose serial moved on', $w1, $w3);
serial_is('a CheckOut of a watch whose serial moved on', 'IDX-SER-2', $w3);
is($t->redis('EXISTS', "mdm_watch:pair:$w2"), 0,
    'a CheckOut of a watch: its pair is deleted');

checks_out('a CheckOut of a phone', $other_phone);
indexed('a CheckOut of a phone', $w1, $w3);
serial_is('a CheckOut of a phone', 'IDX-SER-1B', $w1);
serial_is('a CheckOut of a phone', 'IDX-SER-2', $w3);
is($t->redis('HGET', "mdm_watch:pair:$_", 'state'), 'unpaired',
    "a CheckOut of a phone: its watch $_ is unpaired") for $w1, $w3;
{
    my ($res, $json) = get_pairs($t, "watch=$w1");
    is($json->{pairs}[0]{state}, 'unpaired',
        'the pairs location shows the watch unpaired');
}

checks_out('a CheckOut of an unpaired watch', $w1);
indexed('a CheckOut of an unpaired watch', $w3);
serial_is('a CheckOut of an unpaired watch', 'IDX-SER-1B', undef);

checks_out('a CheckOut of the last watch', $w3);
indexed('a CheckOut of the last watch');
serial_is('a CheckOut of the last watch', 'IDX-SER-2', undef);
is_deeply([$t->redis_keys('mdm_watch:serial:*')], [],
    'no serial is left in the index');

# a serial is indexed if the pairs location can look it up, 64 bytes at
# most; a longer one is kept in the pair only
my ($w4, $w5) = map { sprintf '00008301-0000000000000D2%d', $_ } 4 .. 5;
my $serial64 = 'IDX-' . ('6' x 60);
my $serial65 = 'IDX-' . ('7' x 61);

pair($t, $w4, $phone, SERIAL => $serial64);
serial_is('a serial of 64 bytes', $serial64, $w4);

pair($t, $w5, $phone, SERIAL => $serial65);
indexed('a watch with a serial of 65 bytes paired', $w4, $w5);
is($t->redis('EXISTS', "mdm_watch:serial:$serial65"), 0,
    'a serial of 65 bytes is not indexed');
is($t->redis('HGET', "mdm_watch:pair:$w5", 'serial'), $serial65,
    'a serial of 65 bytes is kept in the pair');
{
    my ($res, $json) = get_pairs($t, "watch=$w5");
    is($json->{pairs}[0]{watch_serial}, $serial65,
        'the pairs location shows the serial of 65 bytes');
}

$t->finish;
