package MdmWatch::Pairs;

# For the tests of mdm_watch_pairs: pairing a watch through the whole
# flow, writing pairs straight into Redis in the module's layout, many at
# a time, and reading the pairs location.

use strict;
use warnings;

use Carp qw(croak);
use Exporter qw(import);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time);

use MdmWatch::Test;

our $VERSION = '1';

our @EXPORT_OK = qw(pair store_pairs remove_pairs get_pairs json_strict
    sample_pairs);

our $URI = '/pairs';

=head1 NAME

MdmWatch::Pairs - pairs for the tests of the mdm_watch_pairs location

=head1 FUNCTIONS

C<pair($t, $watch, $phone, %machine_info)> pairs a watch with a phone
through the module, from the challenge to the enrollment, and dies if
it does not succeed; the phone must be enrolled.

C<store_pairs($t, @pairs)> writes pairs ({watch, phone, serial,
product, version, os_version, paired_at, state}) into Redis as the
module does, with both indexes, over one pipelined connection.
C<remove_pairs($t, @watches)> removes them again, as a watch's
CheckOut does.

C<sample_pairs> are eight pairs of four phones, as an MDM deployment
might hold them, one unpaired, for the browser test and the screenshots
of the page.

C<get_pairs($t, $query, %request)> GETs the pairs location as JSON and
returns the response and its body parsed by C<json_strict>, a strict
JSON parser (undef if it does not parse).

=cut

sub pair {
    my ($t, $watch, $phone, %mi) = @_;
    my $st = $t->challenge(UDID => $watch, %mi)
        // croak "no challenge for $watch";
    my $token = $t->get_token(udid => $phone, security_token => $st,
        watch_udid => $watch) // croak "no pairing token for $phone";
    my $res = $t->enroll(UDID => $watch, PAIRING_TOKEN => $token, %mi);
    croak "the watch $watch is not paired: " . MdmWatch::Test::describe($res)
        unless $res->{status} == 200;
    return $res;
}

sub store_pairs {
    my ($t, @pairs) = @_;
    my @cmds;

    for my $p (@pairs) {
        my %h = (
            watch_udid => $p->{watch},
            phone_udid => $p->{phone},
            serial     => $p->{serial} // '',
            product    => $p->{product} // 'Watch7,1',
            version    => $p->{version} // '21R355',
            os_version => $p->{os_version} // '10.0',
            paired_at  => $p->{paired_at} // 1796407200,
            state      => $p->{state} // 'paired',
        );
        push @cmds, ['HSET', "mdm_watch:pair:$p->{watch}", %h],
            ['SADD', "mdm_watch:phone:$p->{phone}", $p->{watch}],
            ['ZADD', 'mdm_watch:pairs', 0, $p->{watch}];
        push @cmds, ['SET', 'mdm_watch:serial:' . uc $h{serial},
            $p->{watch}] if length $h{serial};
    }
    return pipeline($t, @cmds);
}

sub remove_pairs {
    my ($t, @watches) = @_;
    return pipeline($t, map {
        (['ZREM', 'mdm_watch:pairs', $_], ['DEL', "mdm_watch:pair:$_"])
    } @watches);
}

# the commands in one write, then their replies; an error reply dies
sub pipeline {
    my ($t, @cmds) = @_;
    return [] unless @cmds;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port('redis'), Proto => 'tcp', Timeout => 2)
        or croak "connect to redis: $!";
    binmode $s;

    my $req = '';
    for my $cmd (@cmds) {
        $req .= '*' . @$cmd . "\r\n";
        $req .= '$' . length($_) . "\r\n$_\r\n" for @$cmd;
    }
    $s->blocking(0);
    MdmWatch::Test::write_all($s, $req, time + 10)
        or croak "write to redis: $!";

    my $reader = { sock => $s, buf => '', deadline => time + 10 };
    my @replies = map { MdmWatch::Test::resp_read($reader) } @cmds;
    close $s;
    return \@replies;
}

sub sample_pairs {
    my @watches = (
        ['00008110-001A2B3C4D5E6F01', '00008301-0A1B2C3D4E5F6071',
         'K9XWT4LQ2M', 'Watch7,1', '10.1'],
        ['00008110-001A2B3C4D5E6F01', '00008301-0C3D4E5F60718293',
         'H4PLQ2M8VN', 'Watch6,18', '10.0.1'],
        ['00008120-002B3C4D5E6F7A02', '00008301-1B2C3D4E5F607182',
         'F2JWT7XK4P', 'Watch7,3', '10.1'],
        ['00008120-002B3C4D5E6F7A02', '00008301-2C3D4E5F60718293',
         'G7MNR3WQ9D', 'Watch7,4', '10.1', 'unpaired'],
        ['00008120-002B3C4D5E6F7A02', '00008301-3D4E5F6071829304',
         'L1QTZ8HC5R', 'Watch6,6', '9.6.3'],
        ['00008130-003C4D5E6F7A8B03', '00008301-4E5F607182930415',
         'M5VB2KX7TJ', 'Watch7,2', '10.1'],
        ['00008140-004D5E6F7A8B9C04', '00008301-5F60718293041526',
         'N8CR4DY6WS', 'Watch6,14', '10.0'],
        ['00008140-004D5E6F7A8B9C04', '00008301-6071829304152637',
         'P3HS9FL2QE', 'Watch7,1', '10.1'],
    );
    my $i = 0;
    return map {
        my ($phone, $watch, $serial, $product, $os, $state) = @$_;
        { watch => $watch, phone => $phone, serial => $serial,
          product => $product, os_version => $os,
          paired_at => 1796400000 + 3600 * 7 * $i++,
          state => $state // 'paired' }
    } @watches;
}

sub json_strict {
    my ($text) = @_;
    return eval { JSON::PP->new->utf8->decode($text) };
}

sub get_pairs {
    my ($t, $query, %o) = @_;
    my $uri = $URI . (defined $query && length $query ? "?$query" : '');
    my $res = $t->request(uri => $uri,
        headers => [['Accept', 'application/json']], %o);
    return ($res, json_strict($res->{body} // ''));
}

1;
